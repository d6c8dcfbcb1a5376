-- model: int_current_reports
-- purpose: current, not deleted reports in their current, not deleted channel, with the channel's
--     account and time zone.
-- grain: report_id
-- incremental: by_report
with reports as (
    select * from stg_reports
    where not is_deleted
),

channels as (
    select * from dim_channels
    where not is_deleted
),

final as (
    select
        reports.report_id,
        reports.token,
        reports.user_id,
        reports.state_id,
        reports.created_at,
        reports.selections,
        channels.channel_id,
        channels.account_id,
        channels.personal,
        channels.timezone
    from reports
    inner join channels
        on reports.channel_id = channels.channel_id
)

select * from final
