-- model: dim_fields
-- purpose: every known form field with its account and type.
-- grain: field_id
-- order_by: field_id
-- incremental: on_change
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
