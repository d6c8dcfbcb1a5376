-- model: dim_channels
-- purpose: every known channel with its account, time zone and flags.
-- grain: channel_id
-- order_by: channel_id
-- incremental: on_change
with channels as (
    select * from stg_channels
),

accounts as (
    select * from stg_accounts
),

final as (
    select
        channels.channel_id,
        channels.account_id,
        channels.name,
        channels.personal,
        channels.is_deleted,
        coalesce(accounts.timezone, 'UTC') as timezone
    from channels
    left join accounts
        on channels.account_id = accounts.account_id
)

select * from final
