-- unique_keys: the declared grain of every published model appears once in its table. The query
-- is generated from the models' headers (models.unique_keys_query; the build installs its text as
-- the macro unique_keys_query()), so no model can be left out.
-- returns: one row per duplicated key (table_name, key: the grain's values joined by '/', copies)
-- scope: keys (a duplicated key has a row added since the last audit)
with duplicates as (
    select * from query(unique_keys_query())
),

final as (
    select
        table_name,
        key,
        copies
    from duplicates
)

select * from final
