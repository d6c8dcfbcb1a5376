-- fct_reads: each read of a current report, in the report's current channel, for exact edges.
-- Sorted by channel and time.
-- grain: one row per read_id
with reads as (
    select * from stg_reads
),

reports as (
    select * from int_current_reports
),

final as (
    select
        reports.channel_id,
        reads.read_at,
        local_hour_start(reads.read_at, reports.timezone) as hour_start,
        reads.report_id,
        reads.user_id
    from reads
    inner join reports
        on reads.report_id = reports.report_id
)

select * from final
order by channel_id, read_at, report_id, user_id
