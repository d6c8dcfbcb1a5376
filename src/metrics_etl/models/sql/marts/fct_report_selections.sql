-- model: fct_report_selections
-- purpose: each distinct (field, value) selected by a current report, for exact range edges.
-- grain: report_id, field_id, value
-- partitioned_by: created_at (month)
-- order_by: channel_id, created_at, report_id, field_id, value
-- incremental: by_key(report_id)
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
    -- one composite key: with two separate keys the optimizer may join every event to the
    -- same slot of every zone first (12x the rows at 10M events). Neither part is ever null
    -- (zones are coalesced to UTC, event times are required), where a row key would match.
    inner join slots
        on (selections.timezone, quarter_slot(selections.created_at)) = (slots.timezone, slots.slot)
        -- the part of the slot the instant is in (a slot is cut where an offset changes)
        and selections.created_at >= slots.starts_at
        and selections.created_at < slots.ends_at
)

select * from final
