-- windows: the time windows of the report-stats API, written once (report_stats and the
-- incremental run both use them).
-- recent_runs_start: where the window of recent manual runs ending at as_of starts: a manual run
-- counts when recent_runs_start(as_of) <= ran_at < as_of (30 days).
create or replace macro recent_runs_start(as_of) as as_of - interval 30 days;
