-- fct_reports: the report set R of the analytics API, with local-time attributes, for exact
-- edges of any range. Sorted by channel and time.
-- grain: one row per current report
with reports as (
    select * from int_current_reports
),

final as (
    select
        channel_id,
        created_at,
        local_hour_start(created_at, timezone) as hour_start,
        local_bucket_start(created_at, timezone, 'day') as day_start,
        local_bucket_start(created_at, timezone, 'week') as week_start,
        local_bucket_start(created_at, timezone, 'month') as month_start,
        hour(local_ts(created_at, timezone)) as local_hour,
        dayofweek(local_ts(created_at, timezone)) as dow,
        report_id,
        user_id,
        state_id,
        account_id
    from reports
)

select * from final
order by channel_id, created_at, report_id
