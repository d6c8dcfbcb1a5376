-- local_time: local-time helpers.
-- local_ts: the local wall-clock time of an instant in an IANA zone (DuckDB ICU).
-- quarter_slot: the UTC slot of an instant (see int_local_slots): 15 minutes from 1980 on; one
-- second before, when local mean times (New York's -4:56:02 until 1883, in force back to year 1)
-- and offsets such as Kiritimati's -10:40 (until 1979-10) do not fall on quarter hours.
create or replace macro local_ts(t, tz) as timezone(tz, t);

create or replace macro quarter_slot(t) as
    case
        when t < timestamptz '1980-01-01 00:00:00+00' then date_trunc('second', t)
        else time_bucket(interval 15 minutes, t)
    end;
