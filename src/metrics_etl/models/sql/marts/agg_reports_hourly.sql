-- model: agg_reports_hourly
-- purpose: report counts per channel and local hour bucket, with the bucket's local attributes
--     (hour of day, weekday, day/week/month starts). Where an offset change cuts an hour
--     (e.g. St. John's 2006-10-29, Casey 2020-10-03), two local hours can start at the same
--     instant: the local hour is part of the grain.
-- grain: channel_id, hour_start, local_hour
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start
-- incremental: by_group
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
