-- model: stg_report_runs
-- purpose: each report_runs event once (retries share the key; the smallest file, line is kept).
-- grain: run_id
-- incremental: by_key(run_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by run_id
            order by
                _file,
                _line
        ) as version_rank
    from raw_report_runs
),

final as (
    select
        run_id,
        account_id,
        report_id,
        user_id,
        run_type,
        ran_at
    from ranked
    where version_rank = 1
)

select * from final
