-- model: fct_report_images
-- purpose: current, not deleted images of current reports, in the report's current channel.
-- grain: report_image_id
-- partitioned_by: created_at (month)
-- order_by: channel_id, created_at, report_image_id
-- incremental: by_key(report_image_id)
with images as (
    select * from stg_report_images
    where not is_deleted
),

reports as (
    select * from int_current_reports
),

final as (
    select
        reports.channel_id,
        images.created_at,
        images.report_image_id,
        reports.account_id,
        images.report_id,
        images.styles.thumb as thumb,
        images.styles.medium as medium
    from images
    inner join reports
        on images.report_id = reports.report_id
)

select * from final
