-- dim_users: every known user with current names and email.
-- grain: one row per user_id
with users as (
    select * from stg_users
),

final as (
    select
        user_id,
        account_id,
        first_name,
        last_name,
        email
    from users
)

select * from final
