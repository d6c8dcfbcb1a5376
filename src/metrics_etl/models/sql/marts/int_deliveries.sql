-- model: int_deliveries
-- purpose: each alert delivery of a current report, attributed once to the report's current
--     channel and time zone: the one join of the deliveries to the reports, which the local-time
--     slots (int_local_slots), the fact (fct_deliveries) and through it the hourly rollup
--     derive from.
-- grain: delivery_id
-- incremental: by_key(delivery_id)
with deliveries as (
    select * from stg_alerts
),

reports as (
    select * from int_current_reports
),

final as (
    select
        reports.channel_id,
        reports.timezone,
        deliveries.sent_at,
        deliveries.delivery_id,
        deliveries.alert_id,
        deliveries.report_id,
        deliveries.user_id
    from deliveries
    inner join reports
        on deliveries.report_id = reports.report_id
)

select * from final
