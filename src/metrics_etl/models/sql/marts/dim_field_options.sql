-- model: dim_field_options
-- purpose: the current name of each option value of a field (the first option in the field's list
--     with that value).
-- grain: field_id, value
-- order_by: field_id, value
-- incremental: on_change
with options as (
    select
        field_id,
        unnest(options) as option,
        generate_subscripts(options, 1) as position
    from stg_fields
    where options is not null
),

ranked as (
    select
        field_id,
        option.value as value,
        option.name as name,
        row_number() over (partition by field_id, option.value order by position) as option_rank
    from options
),

final as (
    select
        field_id,
        value,
        name
    from ranked
    where option_rank = 1
)

select * from final
