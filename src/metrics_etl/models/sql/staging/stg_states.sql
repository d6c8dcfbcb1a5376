-- model: stg_states
-- purpose: current version of each state (greatest updated_at wins; ties: smallest file, line).
-- grain: state_id
-- incremental: by_key(state_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by state_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_states
),

final as (
    select
        state_id,
        account_id,
        name,
        updated_at
    from ranked
    where version_rank = 1
)

select * from final
