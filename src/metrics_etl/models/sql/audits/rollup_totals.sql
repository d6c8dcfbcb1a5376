-- rollup_totals: every hourly rollup adds up to the facts it summarizes, per channel.
-- returns: one row per (rollup, channel_id) whose total differs from the fact count
with fact_counts as (
    select
        'reports' as subject,
        channel_id,
        count(*) as n
    from fct_reports
    group by all
    union all
    select
        'reports_with_state' as subject,
        channel_id,
        count(*) as n
    from fct_reports
    where state_id is not null
    group by all
    union all
    select
        'selections' as subject,
        channel_id,
        count(*) as n
    from fct_report_selections
    group by all
    union all
    select
        'reads' as subject,
        channel_id,
        count(*) as n
    from fct_reads
    group by all
    union all
    select
        'deliveries' as subject,
        channel_id,
        count(*) as n
    from fct_deliveries
    group by all
    union all
    select
        'opened' as subject,
        channel_id,
        count(*) as n
    from fct_deliveries
    where opened
    group by all
),

rollup_counts as (
    select
        'reports' as subject,
        channel_id,
        sum(report_count) as n
    from agg_reports_hourly
    group by all
    union all
    select
        'reports' as subject,
        channel_id,
        sum(report_count) as n
    from agg_reports_by_user_hourly
    group by all
    union all
    select
        'reports_with_state' as subject,
        channel_id,
        sum(report_count) as n
    from agg_reports_by_state_hourly
    group by all
    union all
    select
        'selections' as subject,
        channel_id,
        sum(report_count) as n
    from agg_report_selections_hourly
    group by all
    union all
    select
        'reads' as subject,
        channel_id,
        sum(read_count) as n
    from agg_reads_hourly
    group by all
    union all
    select
        'deliveries' as subject,
        channel_id,
        sum(delivery_count) as n
    from agg_deliveries_hourly
    group by all
    union all
    select
        'opened' as subject,
        channel_id,
        sum(opened_count) as n
    from agg_deliveries_hourly
    group by all
),

final as (
    select
        rollup_counts.subject,
        rollup_counts.channel_id,
        rollup_counts.n as rollup_total,
        coalesce(fact_counts.n, 0) as fact_total
    from rollup_counts
    left join fact_counts
        on rollup_counts.subject = fact_counts.subject
        and rollup_counts.channel_id = fact_counts.channel_id
    where rollup_counts.n <> coalesce(fact_counts.n, 0)
)

select * from final
