-- model: stg_report_edits
-- purpose: each report_edits event once (retries share the key; the smallest file, line is kept).
-- grain: edit_id
-- incremental: by_key(edit_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by edit_id
            order by
                _file,
                _line
        ) as version_rank
    from raw_report_edits
),

final as (
    select
        edit_id,
        account_id,
        report_id,
        user_id,
        edited_at
    from ranked
    where version_rank = 1
)

select * from final
