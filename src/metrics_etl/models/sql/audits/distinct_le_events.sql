-- distinct_le_events: distinct counts never exceed event counts. Every row of the read and
-- delivery rollups stands for at least one event (and no more opens than deliveries), so over any
-- set of hours the distinct keys, counted as rows, never exceed the events summed (checked per
-- row: one filtered scan instead of a grouping of every channel and hour).
-- returns: one row per rollup row that breaks the bound (subject, channel_id, hour_start, counts)
-- scope: keys (a failing rollup row was added since the last audit)
with reads as (
    select
        'reads' as subject,
        channel_id,
        hour_start,
        read_count as events,
        null::bigint as opened
    from agg_reads_hourly
    where read_count is null or read_count < 1
),

deliveries as (
    select
        'deliveries' as subject,
        channel_id,
        hour_start,
        delivery_count as events,
        opened_count as opened
    from agg_deliveries_hourly
    where delivery_count is null or delivery_count < 1
        or opened_count is null or opened_count < 0 or opened_count > delivery_count
),

final as (
    select * from reads
    union all
    select * from deliveries
)

select * from final
