-- model: stg_alerts
-- purpose: each alerts event once (retries share the key; the smallest file, line is kept).
-- grain: delivery_id
-- incremental: by_key(delivery_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by delivery_id
            order by
                _file,
                _line
        ) as version_rank
    from raw_alerts
),

final as (
    select
        delivery_id,
        alert_id,
        account_id,
        report_id,
        user_id,
        sent_at
    from ranked
    where version_rank = 1
)

select * from final
