-- unique_keys: every fact and dimension key appears once (grouped on the native key types).
-- returns: one row per duplicated key (table, key)
with duplicates as (
    select 'fct_reports' as table_name, report_id::varchar as key, count(*) as copies
    from fct_reports group by report_id having count(*) > 1
    union all
    select 'fct_deliveries', delivery_id::varchar, count(*)
    from fct_deliveries group by delivery_id having count(*) > 1
    union all
    select 'fct_report_images', report_image_id::varchar, count(*)
    from fct_report_images group by report_image_id having count(*) > 1
    union all
    select 'report_stats', report_id::varchar, count(*)
    from report_stats group by report_id having count(*) > 1
    union all
    select 'dim_channels', channel_id::varchar, count(*)
    from dim_channels group by channel_id having count(*) > 1
    union all
    select 'dim_accounts', account_id::varchar, count(*)
    from dim_accounts group by account_id having count(*) > 1
    union all
    select 'dim_users', user_id::varchar, count(*)
    from dim_users group by user_id having count(*) > 1
    union all
    select 'dim_field_options', field_id::varchar || '/' || value, count(*)
    from dim_field_options group by field_id, value having count(*) > 1
),

final as (
    select
        table_name,
        key,
        copies
    from duplicates
)

select * from final
