-- model: dim_accounts
-- purpose: every known account with its organization name and time zone.
-- grain: account_id
-- order_by: account_id
-- incremental: on_change
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
