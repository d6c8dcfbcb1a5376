-- model: stg_channels
-- purpose: current version of each channel (greatest updated_at wins; ties: smallest file, line).
-- grain: channel_id
-- incremental: by_key(channel_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by channel_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_channels
),

final as (
    select
        channel_id,
        account_id,
        name,
        owner_user_id,
        updated_at,
        deleted_at,
        coalesce(personal, false) as personal,
        deleted_at is not null as is_deleted
    from ranked
    where version_rank = 1
)

select * from final
