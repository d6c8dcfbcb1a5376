-- fct_deliveries: each alert delivery of a current report, in the report's current channel,
-- with whether it was ever opened. Sorted by channel and time.
-- grain: one row per delivery_id
with deliveries as (
    select * from stg_alerts
),

opened as (
    select distinct delivery_id from stg_alert_opens
),

reports as (
    select * from int_current_reports
),

final as (
    select
        reports.channel_id,
        deliveries.sent_at,
        local_hour_start(deliveries.sent_at, reports.timezone) as hour_start,
        deliveries.delivery_id,
        deliveries.alert_id,
        deliveries.report_id,
        deliveries.user_id,
        opened.delivery_id is not null as opened
    from deliveries
    inner join reports
        on deliveries.report_id = reports.report_id
    left join opened
        on deliveries.delivery_id = opened.delivery_id
)

select * from final
order by channel_id, sent_at, delivery_id
