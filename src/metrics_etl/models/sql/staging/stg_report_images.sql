-- model: stg_report_images
-- purpose: current version of each report_image (greatest updated_at wins; ties: smallest file,
--     line).
-- grain: report_image_id
-- incremental: by_key(report_image_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by report_image_id
            order by
                updated_at desc,
                _file asc,
                _line asc
        ) as version_rank
    from raw_report_images
),

final as (
    select
        report_image_id,
        report_id,
        account_id,
        created_at,
        updated_at,
        deleted_at,
        styles,
        deleted_at is not null as is_deleted
    from ranked
    where version_rank = 1
)

select * from final
