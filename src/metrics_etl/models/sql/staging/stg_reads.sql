-- model: stg_reads
-- purpose: each reads event once (retries share the key; the smallest file, line is kept).
-- grain: read_id
-- incremental: by_key(read_id)
with ranked as (
    select
        *,
        row_number() over (
            partition by read_id
            order by
                _file,
                _line
        ) as version_rank
    from raw_reads
),

final as (
    select
        read_id,
        account_id,
        report_id,
        user_id,
        read_at
    from ranked
    where version_rank = 1
)

select * from final
