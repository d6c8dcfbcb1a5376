-- model: agg_reports_hourly
-- purpose: report counts per channel and local hour bucket, with the bucket's local attributes
--     (hour of day, weekday, day/week/month starts).
-- grain: channel_id, hour_start
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
