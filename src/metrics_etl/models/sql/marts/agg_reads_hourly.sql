-- model: agg_reads_hourly
-- purpose: reads per channel, local hour bucket, report and reader. Distinct counts over any set of
--     whole hours are exact because (report, reader) pairs stay distinct rows.
-- grain: channel_id, hour_start, report_id, user_id
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start, report_id, user_id
-- incremental: by_group
with reads as (
    select * from fct_reads
),

final as (
    select
        channel_id,
        hour_start,
        report_id,
        user_id,
        count(*) as read_count
    from reads
    group by all
)

select * from final
