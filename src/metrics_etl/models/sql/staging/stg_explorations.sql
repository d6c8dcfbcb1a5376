-- model: stg_explorations
-- purpose: each explorations event once (retries share the key; the smallest file, line is kept).
-- grain: exploration_id
-- incremental: by_key(exploration_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by exploration_id
            order by
                _file,
                _line
        ) as version_rank
    from raw_explorations
),

final as (
    select
        exploration_id,
        account_id,
        report_id,
        user_id,
        created_at
    from ranked
    where version_rank = 1
)

select * from final
