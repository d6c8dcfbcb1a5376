-- dim_fields: every known form field with its account and type.
-- grain: one row per field_id
with fields as (
    select * from stg_fields
),

final as (
    select
        field_id,
        account_id,
        field_type,
        label
    from fields
)

select * from final
