-- model: int_local_slots
-- purpose: local-time attributes of each UTC slot (quarter_slot: 15 minutes from 1980 on, one
--     second before) that holds a report, read or alert delivery, in every channel time zone. A
--     slot that a UTC offset change or a local hour boundary cuts (from 1980 on only the changes at
--     :01 or :31 UTC, e.g. St. John's, Goose Bay and Moncton 1987-2011, Gaza, Hebron, Casey) is
--     split into parts at the exact seconds of the cuts, so all local attributes are constant
--     within each part [starts_at, ends_at) and facts take them by a join on the slot, within the
--     part, instead of per-row time-zone arithmetic. Offsets and changes are whole seconds. Day,
--     week and month start at the first instant of their first day (first_instant).
-- grain: timezone, slot, starts_at
-- incremental: append_missing
with reports as (
    select * from int_current_reports
),

instants as (
    select
        timezone,
        created_at as t
    from reports
    union all
    select
        timezone,
        read_at
    from int_reads
    union all
    select
        timezone,
        sent_at
    from int_deliveries
),

slots as (
    select distinct
        timezone,
        quarter_slot(t) as slot
    from instants
),

-- UTC days (numbered from 1970-01-01; from 1980 on, a one-second slot is never cut) in which a
-- slot may be cut: the offset at the day's last microsecond differs from the one at its first,
-- or is not a whole quarter hour. Offsets change at most once a week (since 1980), so a day
-- without either has no cut slot.
utc_days as (
    select distinct
        timezone,
        epoch_us(slot) // 86400000000 as utc_day
    from slots
    where slot >= timestamptz '1980-01-01 00:00:00+00'
),

utc_day_edges as (
    select
        timezone,
        utc_day,
        local_ts(to_timestamp(utc_day * 86400), timezone) as local_first,
        local_ts(to_timestamp(utc_day * 86400 + 86400) - interval 1 microsecond, timezone)
            as local_last
    from utc_days
),

changing_days as (
    select
        timezone,
        utc_day
    from utc_day_edges
    where epoch_us(local_last) - epoch_us(local_first) <> 86399999999
        or time_bucket(interval 15 minutes, local_first) <> local_first
),

slot_edges as (
    select
        slots.timezone,
        slots.slot,
        slot_end(slots.slot) as ends_at,
        local_ts(slots.slot, slots.timezone) as local_first,
        local_ts(slot_end(slots.slot) - interval 1 microsecond, slots.timezone) as local_last
    from slots
    inner join changing_days
        on slots.timezone = changing_days.timezone
        and epoch_us(slots.slot) // 86400000000 = changing_days.utc_day
),

-- cut: the slot's first and last microsecond are in different local hours or at different offsets
cut_slots as (
    select
        timezone,
        slot,
        ends_at
    from slot_edges
    where date_trunc('hour', local_first) <> date_trunc('hour', local_last)
        or epoch_us(local_last) - epoch_us(local_first) <> epoch_us(ends_at) - epoch_us(slot) - 1
),

-- UTC days at one offset throughout, a whole quarter hour: a slot's local time there is the
-- day's first local time plus the slot's distance from the day's start (one ICU call per day,
-- not per slot)
steady_days as (
    select
        utc_day_edges.timezone,
        utc_day_edges.utc_day,
        to_timestamp(utc_day_edges.utc_day * 86400) as day_start,
        utc_day_edges.local_first
    from utc_day_edges
    anti join changing_days
        on utc_day_edges.timezone = changing_days.timezone
        and utc_day_edges.utc_day = changing_days.utc_day
),

whole_slots as (
    select
        slots.timezone,
        slots.slot,
        slots.slot as starts_at,
        slot_end(slots.slot) as ends_at,
        coalesce(
            steady_days.local_first + (slots.slot - steady_days.day_start),
            local_ts(slots.slot, slots.timezone)
        ) as local_start
    from slots
    left join steady_days
        on slots.timezone = steady_days.timezone
        and epoch_us(slots.slot) // 86400000000 = steady_days.utc_day
    anti join cut_slots
        on slots.timezone = cut_slots.timezone
        and slots.slot = cut_slots.slot
),

cut_seconds as (
    select
        timezone,
        slot,
        ends_at as slot_ends_at,
        unnest(generate_series(slot, ends_at - interval 1 second, interval 1 second)) as second
    from cut_slots
),

second_times as (
    select
        timezone,
        slot,
        slot_ends_at,
        second,
        local_ts(second, timezone) as local_start
    from cut_seconds
),

-- a part starts at the slot start and at each second whose local hour or offset differs from
-- the second before
second_keys as (
    select
        timezone,
        slot,
        slot_ends_at,
        second,
        local_start,
        date_trunc('hour', local_start) as local_hour_start,
        second - (local_start - date_trunc('hour', local_start)) as hour_start
    from second_times
),

part_starts as (
    select
        timezone,
        slot,
        slot_ends_at,
        second as starts_at,
        local_start
    from second_keys
    window w as (partition by timezone, slot order by second)
    qualify
        lag(local_hour_start) over w is distinct from local_hour_start
        or lag(hour_start) over w is distinct from hour_start
),

parts as (
    select
        timezone,
        slot,
        starts_at,
        coalesce(
            lead(starts_at) over (partition by timezone, slot order by starts_at),
            slot_ends_at
        ) as ends_at,
        local_start
    from part_starts
),

local_slots as (
    select * from whole_slots
    union all
    select * from parts
),

days as (
    select distinct
        timezone,
        date_trunc('day', local_start) as local_day
    from local_slots
),

-- the local midnights buckets start at: each day's, its week's Monday's and its month's first's
midnights as (
    select
        timezone,
        local_day as midnight
    from days
    union
    select
        timezone,
        date_trunc('week', local_day) as midnight
    from days
    union
    select
        timezone,
        date_trunc('month', local_day) as midnight
    from days
),

midnight_instants as (
    select
        timezone,
        midnight,
        first_instant(timezone, midnight) as starts_at
    from midnights
),

day_starts as (
    select
        days.timezone,
        days.local_day,
        day_midnights.starts_at as day_start,
        week_midnights.starts_at as week_start,
        month_midnights.starts_at as month_start
    from days
    inner join midnight_instants as day_midnights
        on days.timezone = day_midnights.timezone
        and days.local_day = day_midnights.midnight
    inner join midnight_instants as week_midnights
        on days.timezone = week_midnights.timezone
        and date_trunc('week', days.local_day) = week_midnights.midnight
    inner join midnight_instants as month_midnights
        on days.timezone = month_midnights.timezone
        and date_trunc('month', days.local_day) = month_midnights.midnight
),

final as (
    select
        local_slots.timezone,
        local_slots.slot,
        local_slots.starts_at,
        local_slots.ends_at,
        local_slots.starts_at - (
            local_slots.local_start - date_trunc('hour', local_slots.local_start)
        ) as hour_start,
        day_starts.day_start,
        day_starts.week_start,
        day_starts.month_start,
        hour(local_slots.local_start) as local_hour,
        dayofweek(local_slots.local_start) as dow
    from local_slots
    inner join day_starts
        on local_slots.timezone = day_starts.timezone
        and date_trunc('day', local_slots.local_start) = day_starts.local_day
)

select * from final
