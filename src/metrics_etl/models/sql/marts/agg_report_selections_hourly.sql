-- agg_report_selections_hourly: reports per channel, local hour bucket, field and value.
-- grain: one row per (channel_id, hour_start, field_id, value)
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
