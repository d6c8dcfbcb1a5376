-- model: stg_alert_opens
-- purpose: each alert_opens event once (retries share the key; the smallest file, line is kept).
-- grain: open_id
-- incremental: by_key(open_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by open_id
            order by
                _file,
                _line
        ) as version_rank
    from raw_alert_opens
),

final as (
    select
        open_id,
        delivery_id,
        account_id,
        opened_at
    from ranked
    where version_rank = 1
)

select * from final
