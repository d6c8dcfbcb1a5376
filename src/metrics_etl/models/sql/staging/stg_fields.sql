-- model: stg_fields
-- purpose: current version of each field (greatest updated_at wins; ties: smallest file, line).
-- grain: field_id
-- incremental: by_key(field_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by field_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_fields
),

final as (
    select
        field_id,
        account_id,
        field_type,
        label,
        options,
        updated_at
    from ranked
    where version_rank = 1
)

select * from final
