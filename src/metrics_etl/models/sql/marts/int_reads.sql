-- model: int_reads
-- purpose: each read of a current report, attributed once to the report's current channel and
--     time zone: the one join of the reads to the reports, which the local-time slots
--     (int_local_slots), the fact (fct_reads) and through it the hourly rollup derive from.
-- grain: read_id
-- incremental: by_key(read_id)
with reads as (
    select * from stg_reads
),

reports as (
    select * from int_current_reports
),

final as (
    select
        reports.channel_id,
        reports.timezone,
        reads.read_at,
        reads.read_id,
        reads.report_id,
        reads.user_id
    from reads
    inner join reports
        on reads.report_id = reports.report_id
)

select * from final
