-- model: dim_users
-- purpose: every known user with current names and email.
-- grain: user_id
-- order_by: user_id
-- incremental: on_change
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
