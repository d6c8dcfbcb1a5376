-- agg_reports_by_state_hourly: report counts per channel, local hour bucket and state
-- (reports without a state are left out).
-- grain: one row per (channel_id, hour_start, state_id)
with reports as (
    select * from fct_reports
    where state_id is not null
),

final as (
    select
        channel_id,
        hour_start,
        state_id,
        count(*) as report_count
    from reports
    group by all
)

select * from final
