-- model: agg_reports_by_user_hourly
-- purpose: report counts per channel, local hour bucket and author.
-- grain: channel_id, hour_start, user_id
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start, user_id
-- incremental: by_group
with reports as (
    select * from fct_reports
),

final as (
    select
        channel_id,
        hour_start,
        user_id,
        count(*) as report_count
    from reports
    group by all
)

select * from final
