-- model: stg_users
-- purpose: current version of each user (greatest updated_at wins; ties: smallest file, line).
-- grain: user_id
-- incremental: by_key(user_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by user_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_users
),

final as (
    select
        user_id,
        account_id,
        first_name,
        last_name,
        email,
        updated_at
    from ranked
    where version_rank = 1
)

select * from final
