-- int_local_slots: local-time attributes of each 15-minute UTC slot that holds a report, read or
-- alert delivery, in every channel time zone. Every UTC offset and transition of the IANA zones
-- since 1979 falls on a quarter hour, so all local attributes are constant within a slot and facts
-- take them by a join instead of per-row time-zone arithmetic.
-- grain: one row per (timezone, slot)
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
        reports.timezone,
        reads.read_at
    from stg_reads as reads
    inner join reports
        on reads.report_id = reports.report_id
    union all
    select
        reports.timezone,
        alerts.sent_at
    from stg_alerts as alerts
    inner join reports
        on alerts.report_id = reports.report_id
),

slots as (
    select distinct
        timezone,
        quarter_slot(t) as slot
    from instants
),

local_slots as (
    select
        timezone,
        slot,
        local_ts(slot, timezone) as local_start
    from slots
),

days as (
    select distinct
        timezone,
        date_trunc('day', local_start) as local_day
    from local_slots
),

day_starts as (
    select
        timezone,
        local_day,
        timezone(timezone, local_day) as day_start,
        timezone(timezone, date_trunc('week', local_day)) as week_start,
        timezone(timezone, date_trunc('month', local_day)) as month_start
    from days
),

final as (
    select
        local_slots.timezone,
        local_slots.slot,
        local_slots.slot - (local_slots.local_start - date_trunc('hour', local_slots.local_start))
            as hour_start,
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
