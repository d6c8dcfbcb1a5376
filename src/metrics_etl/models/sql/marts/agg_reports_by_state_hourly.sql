-- model: agg_reports_by_state_hourly
-- purpose: report counts per channel, local hour bucket and state (reports without a state are left
--     out).
-- grain: channel_id, hour_start, state_id
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start, state_id
-- incremental: by_group
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
