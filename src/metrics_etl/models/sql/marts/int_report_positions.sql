-- model: int_report_positions
-- purpose: the position of each current report in its organization's report-stats pages, with
--     personal channels (position_all) and without them (position_shared). Kept apart from
--     report_stats so a run recomputes positions per organization but stats per report.
-- grain: report_id
-- incremental: by_account
with reports as (
    select * from int_current_reports
),

final as (
    select
        report_id,
        account_id,
        row_number() over (
            partition by account_id order by report_id
        ) as position_all,
        case
            when not personal
                then row_number() over (partition by account_id, personal order by report_id)
        end as position_shared
    from reports
)

select * from final
