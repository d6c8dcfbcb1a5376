-- agg_reports_by_user_hourly: report counts per channel, local hour bucket and author.
-- grain: one row per (channel_id, hour_start, user_id)
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
