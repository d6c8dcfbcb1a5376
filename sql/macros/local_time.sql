-- local_time: local-time attributes of an instant in an IANA zone.
-- Hour buckets are local clock hours at one UTC offset (a fall-back night has two),
-- so their start is the instant minus the local minutes, seconds and microseconds.
-- Day, week (Monday) and month buckets start at local midnight, written as a UTC instant.
create or replace macro local_ts(t, tz) as timezone(tz, t);

create or replace macro local_hour_start(t, tz) as
    t - (timezone(tz, t) - date_trunc('hour', timezone(tz, t)));

create or replace macro local_bucket_start(t, tz, part) as
    timezone(tz, date_trunc(part, timezone(tz, t)));
