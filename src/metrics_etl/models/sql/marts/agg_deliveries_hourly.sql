-- model: agg_deliveries_hourly
-- purpose: deliveries per channel, local hour bucket, recipient, alert and source report, with how
--     many were opened. Distinct alerts and reports per recipient stay exact.
-- grain: channel_id, hour_start, user_id, alert_id, report_id
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start, user_id, alert_id, report_id
-- incremental: by_group
with deliveries as (
    select * from fct_deliveries
),

final as (
    select
        channel_id,
        hour_start,
        user_id,
        alert_id,
        report_id,
        count(*) as delivery_count,
        count(*) filter (where opened) as opened_count
    from deliveries
    group by all
)

select * from final
