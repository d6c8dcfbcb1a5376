-- model: stg_schedules
-- purpose: current version of each schedule (greatest updated_at wins; ties: smallest file, line).
-- grain: schedule_id
-- incremental: by_key(schedule_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by schedule_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_schedules
),

final as (
    select
        schedule_id,
        account_id,
        report_id,
        user_id,
        created_at,
        updated_at,
        deleted_at,
        coalesce(paused, false) as paused,
        deleted_at is not null as is_deleted
    from ranked
    where version_rank = 1
)

select * from final
