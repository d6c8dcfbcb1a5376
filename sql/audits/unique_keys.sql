-- unique_keys: every fact and dimension key appears once.
-- returns: one row per duplicated key (table, key)
with keys as (
    select 'fct_reports' as table_name, report_id::varchar as key from fct_reports
    union all
    select 'fct_deliveries', delivery_id::varchar from fct_deliveries
    union all
    select 'fct_report_images', report_image_id::varchar from fct_report_images
    union all
    select 'report_stats', report_id::varchar from report_stats
    union all
    select 'dim_channels', channel_id::varchar from dim_channels
    union all
    select 'dim_accounts', account_id::varchar from dim_accounts
    union all
    select 'dim_users', user_id::varchar from dim_users
    union all
    select 'dim_field_options', field_id::varchar || '/' || value from dim_field_options
),

final as (
    select
        table_name,
        key,
        count(*) as copies
    from keys
    group by all
    having count(*) > 1
)

select * from final
