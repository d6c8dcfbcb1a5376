-- dim_accounts: every known account with its organization name and time zone.
-- grain: one row per account_id
with accounts as (
    select * from stg_accounts
),

final as (
    select
        account_id,
        username,
        name,
        timezone
    from accounts
)

select * from final
