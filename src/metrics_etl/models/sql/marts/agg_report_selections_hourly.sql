-- model: agg_report_selections_hourly
-- purpose: reports per channel, local hour bucket, field and value.
-- grain: channel_id, hour_start, field_id, value
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start, field_id, value
-- incremental: by_group
with selections as (
    select * from fct_report_selections
),

final as (
    select
        channel_id,
        hour_start,
        field_id,
        value,
        count(*) as report_count
    from selections
    group by all
)

select * from final
