-- distinct_le_events: distinct counts never exceed event counts (per channel and hour).
-- returns: one row per (subject, channel_id, hour_start) that breaks the bound
with reads as (
    select
        'reads' as subject,
        channel_id,
        hour_start,
        sum(read_count) as events,
        count(*) as distinct_pairs
    from agg_reads_hourly
    group by all
),

deliveries as (
    select
        'deliveries' as subject,
        channel_id,
        hour_start,
        sum(delivery_count) as events,
        count(distinct alert_id) as distinct_pairs
    from agg_deliveries_hourly
    group by all
),

final as (
    select * from reads where distinct_pairs > events
    union all
    select * from deliveries where distinct_pairs > events
)

select * from final
