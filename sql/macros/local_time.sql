-- local_time: local-time helpers.
-- local_ts: the local wall-clock time of an instant in an IANA zone (DuckDB ICU).
-- quarter_slot: the 15-minute UTC slot of an instant (see int_local_slots).
create or replace macro local_ts(t, tz) as timezone(tz, t);

create or replace macro quarter_slot(t) as time_bucket(interval 15 minutes, t);
