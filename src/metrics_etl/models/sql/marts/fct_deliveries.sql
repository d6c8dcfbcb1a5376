-- model: fct_deliveries
-- purpose: each alert delivery of a current report, in the report's current channel, with whether
--     it was ever opened.
-- grain: delivery_id
-- partitioned_by: sent_at (month)
-- order_by: channel_id, sent_at, delivery_id
-- incremental: by_key(delivery_id)
with deliveries as (
    select * from int_deliveries
),

opened as (
    select distinct delivery_id from stg_alert_opens
),

slots as (
    select * from int_local_slots
),

final as (
    select
        deliveries.channel_id,
        deliveries.sent_at,
        slots.hour_start,
        deliveries.delivery_id,
        deliveries.alert_id,
        deliveries.report_id,
        deliveries.user_id,
        opened.delivery_id is not null as opened
    from deliveries
    -- one composite key: with two separate keys the optimizer may join every event to the
    -- same slot of every zone first (12x the rows at 10M events). Neither part is ever null
    -- (zones are coalesced to UTC, event times are required), where a row key would match.
    inner join slots
        on (deliveries.timezone, quarter_slot(deliveries.sent_at)) = (slots.timezone, slots.slot)
        -- the part of the slot the instant is in (a slot is cut where an offset changes)
        and deliveries.sent_at >= slots.starts_at
        and deliveries.sent_at < slots.ends_at
    left join opened
        on deliveries.delivery_id = opened.delivery_id
)

select * from final
