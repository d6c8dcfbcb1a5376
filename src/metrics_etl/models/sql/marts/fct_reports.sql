-- model: fct_reports
-- purpose: the report set R of the analytics API, with local-time attributes, for exact edges of
--     any range.
-- grain: report_id
-- partitioned_by: created_at (month)
-- order_by: channel_id, created_at, report_id
-- incremental: by_key(report_id)
with reports as (
    select * from int_current_reports
),

slots as (
    select * from int_local_slots
),

final as (
    select
        reports.channel_id,
        reports.created_at,
        slots.hour_start,
        slots.day_start,
        slots.week_start,
        slots.month_start,
        slots.local_hour,
        slots.dow,
        reports.report_id,
        reports.user_id,
        reports.state_id,
        reports.account_id
    from reports
    -- one composite key, as in the event facts
    inner join slots
        on (reports.timezone, quarter_slot(reports.created_at)) = (slots.timezone, slots.slot)
        -- the part of the slot the instant is in (a slot is cut where an offset changes)
        and reports.created_at >= slots.starts_at
        and reports.created_at < slots.ends_at
)

select * from final
