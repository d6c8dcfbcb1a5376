-- model: dim_states
-- purpose: every known report state with its current name.
-- grain: state_id
-- order_by: state_id
-- incremental: on_change
with states as (
    select * from stg_states
),

final as (
    select
        state_id,
        account_id,
        name
    from states
)

select * from final
