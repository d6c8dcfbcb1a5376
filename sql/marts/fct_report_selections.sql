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

slots as (
    select * from int_local_slots
),

final as (
    select distinct
        selections.channel_id,
        selections.created_at,
        slots.hour_start,
        selections.report_id,
        selections.selection.field_id as field_id,
        selections.selection.value as value
    from selections
    inner join slots
        on selections.timezone = slots.timezone
        and quarter_slot(selections.created_at) = slots.slot
)

select * from final
