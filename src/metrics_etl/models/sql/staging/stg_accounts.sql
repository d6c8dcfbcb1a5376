-- model: stg_accounts
-- purpose: current version of each account (greatest updated_at wins; ties: smallest file, line).
-- grain: account_id
-- incremental: by_key(account_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by account_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_accounts
),

final as (
    select
        account_id,
        username,
        name,
        updated_at,
        coalesce(timezone, 'UTC') as timezone
    from ranked
    where version_rank = 1
)

select * from final
