-- dim_states: every known report state with its current name.
-- grain: one row per state_id
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
