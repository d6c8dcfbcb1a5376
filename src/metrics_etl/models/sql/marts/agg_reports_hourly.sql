-- model: agg_reports_hourly
-- purpose: report counts per channel and local hour bucket, with the bucket's local attributes
--     (hour of day, weekday, day/week/month starts). An hour_start can start two local hours: a
--     change off the hour (St. John's fell back at 00:01 NDT to 23:01 NST) gives the slot it
--     cuts two parts with the same hour_start, on two local days; hence the grain, and the
--     incremental groups of (channel_id, hour_start).
-- grain: channel_id, hour_start, day_start, local_hour
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start
-- incremental: by_group(channel_id, hour_start)
with reports as (
    select * from fct_reports
),

final as (
    select
        channel_id,
        hour_start,
        day_start,
        week_start,
        month_start,
        local_hour,
        dow,
        count(*) as report_count
    from reports
    group by all
)

select * from final
