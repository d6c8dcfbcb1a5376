-- model: stg_reports
-- purpose: current version of each report (greatest updated_at wins; ties: smallest file, line).
-- grain: report_id
-- incremental: by_key(report_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by report_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_reports
),

final as (
    select
        report_id,
        account_id,
        channel_id,
        user_id,
        state_id,
        token,
        created_at,
        updated_at,
        deleted_at,
        selections,
        deleted_at is not null as is_deleted
    from ranked
    where version_rank = 1
)

select * from final
