-- fct_report_selections: each distinct (field, value) selected by a current report, for exact
-- range edges. Sorted by channel and time.
-- grain: one row per (report_id, field_id, value)
with reports as (
    select * from int_current_reports
    where selections is not null
),

selections as (
    select
        report_id,
        channel_id,
        created_at,
        timezone,
        unnest(selections) as selection
    from reports
),

final as (
    select distinct
        channel_id,
        created_at,
        local_hour_start(created_at, timezone) as hour_start,
        report_id,
        selection.field_id as field_id,
        selection.value as value
    from selections
)

select * from final
order by channel_id, created_at, report_id, field_id, value
