-- local_time: local-time helpers.
-- local_ts: the local wall-clock time of an instant in an IANA zone (DuckDB ICU).
-- quarter_slot: the UTC slot of an instant (see int_local_slots): 15 minutes from 1980 on; one
-- second before, when local mean times (New York's -4:56:02 until 1883, in force back to year 1)
-- and offsets such as Kiritimati's -10:40 (until 1979-10) do not fall on quarter hours. From 1980
-- on it is arithmetic on epoch seconds (exact in a double): ICU's time_bucket of a timestamptz
-- is about 4x slower per event.
-- slot_end: the first instant after the slot that starts at slot.
-- A few changes from 1980 on are not on a quarter hour either (St. John's at 03:31Z, Goose Bay
-- and Moncton at 04:01Z, 1987-2011; Gaza, Hebron and Casey at :01Z): int_local_slots cuts the
-- slots they fall in into parts, and facts take the part their instant is in.
create or replace macro local_ts(t, tz) as timezone(tz, t);

create or replace macro quarter_slot(t) as (
    case
        when t < timestamptz '1980-01-01 00:00:00+00' then date_trunc('second', t)
        else to_timestamp(epoch_us(t) // 900000000 * 900)
    end
);

create or replace macro slot_end(slot) as (
    case
        when slot < timestamptz '1980-01-01 00:00:00+00' then slot + interval 1 second
        else slot + interval 15 minutes
    end
);

-- first_instant: the instant at which the wall-clock time in tz first reads local. For a time a
-- fall-back repeats (midnight in St. John's on 2006-10-29, in Havana on 2016-11-06) ICU names
-- the later instant; the first is the time at the offset in force a day before it (offsets
-- change at most once a week), as zoneinfo's fold=0. A time a gap skips keeps ICU's instant.
create or replace macro utc_offset(t, tz) as timezone(tz, t) - timezone('UTC', t);

create or replace macro first_of(tz, local, earlier, later) as (
    case
        when earlier < later and timezone(tz, earlier) = local then earlier
        else later
    end
);

create or replace macro first_instant(tz, local) as (
    first_of(
        tz,
        local,
        timezone('UTC', local - utc_offset(timezone(tz, local) - interval 1 day, tz)),
        timezone(tz, local)
    )
);
