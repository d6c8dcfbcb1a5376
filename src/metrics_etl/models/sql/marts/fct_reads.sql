-- model: fct_reads
-- purpose: each read of a current report, in the report's current channel, for exact edges.
-- grain: read_id
-- partitioned_by: read_at (month)
-- order_by: channel_id, read_at, read_id
-- incremental: by_key(read_id)
with reads as (
    select * from int_reads
),

slots as (
    select * from int_local_slots
),

final as (
    select
        reads.channel_id,
        reads.read_at,
        slots.hour_start,
        reads.read_id,
        reads.report_id,
        reads.user_id
    from reads
    -- one composite key: with two separate keys the optimizer may join every event to the
    -- same slot of every zone first (12x the rows at 10M events). Neither part is ever null
    -- (zones are coalesced to UTC, event times are required), where a row key would match.
    inner join slots
        on (reads.timezone, quarter_slot(reads.read_at)) = (slots.timezone, slots.slot)
        -- the part of the slot the instant is in (a slot is cut where an offset changes)
        and reads.read_at >= slots.starts_at
        and reads.read_at < slots.ends_at
)

select * from final
