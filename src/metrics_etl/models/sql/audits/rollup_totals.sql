-- rollup_totals: every hourly rollup adds up to the facts it summarizes, per channel (a channel
-- with facts and no rollup rows, or rollup rows and no facts, fails too).
-- returns: one row per (subject, rollup, channel_id) whose total differs from the fact count
-- scope: channels (a channel whose totals differ has a changed row)
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
        'agg_reports_hourly' as rollup_table,
        channel_id,
        sum(report_count) as n
    from agg_reports_hourly
    group by all
    union all
    select
        'reports' as subject,
        'agg_reports_by_user_hourly' as rollup_table,
        channel_id,
        sum(report_count) as n
    from agg_reports_by_user_hourly
    group by all
    union all
    select
        'reports_with_state' as subject,
        'agg_reports_by_state_hourly' as rollup_table,
        channel_id,
        sum(report_count) as n
    from agg_reports_by_state_hourly
    group by all
    union all
    select
        'selections' as subject,
        'agg_report_selections_hourly' as rollup_table,
        channel_id,
        sum(report_count) as n
    from agg_report_selections_hourly
    group by all
    union all
    select
        'reads' as subject,
        'agg_reads_hourly' as rollup_table,
        channel_id,
        sum(read_count) as n
    from agg_reads_hourly
    group by all
    union all
    select
        'deliveries' as subject,
        'agg_deliveries_hourly' as rollup_table,
        channel_id,
        sum(delivery_count) as n
    from agg_deliveries_hourly
    group by all
    union all
    select
        'opened' as subject,
        'agg_deliveries_hourly' as rollup_table,
        channel_id,
        sum(opened_count) as n
    from agg_deliveries_hourly
    group by all
),

summarized_by as (
    select
        'reports' as subject,
        'agg_reports_hourly' as rollup_table
    union all
    select
        'reports' as subject,
        'agg_reports_by_user_hourly' as rollup_table
    union all
    select
        'reports_with_state' as subject,
        'agg_reports_by_state_hourly' as rollup_table
    union all
    select
        'selections' as subject,
        'agg_report_selections_hourly' as rollup_table
    union all
    select
        'reads' as subject,
        'agg_reads_hourly' as rollup_table
    union all
    select
        'deliveries' as subject,
        'agg_deliveries_hourly' as rollup_table
    union all
    select
        'opened' as subject,
        'agg_deliveries_hourly' as rollup_table
),

expected as (
    select
        fact_counts.subject,
        summarized_by.rollup_table,
        fact_counts.channel_id,
        fact_counts.n
    from fact_counts
    inner join summarized_by
        on fact_counts.subject = summarized_by.subject
),

final as (
    select
        coalesce(rollup_counts.subject, expected.subject) as subject,
        coalesce(rollup_counts.rollup_table, expected.rollup_table) as rollup_table,
        coalesce(rollup_counts.channel_id, expected.channel_id) as channel_id,
        coalesce(rollup_counts.n, 0) as rollup_total,
        coalesce(expected.n, 0) as fact_total
    from rollup_counts
    full outer join expected
        on rollup_counts.subject = expected.subject
        and rollup_counts.rollup_table = expected.rollup_table
        and rollup_counts.channel_id = expected.channel_id
    where coalesce(rollup_counts.n, 0) <> coalesce(expected.n, 0)
)

select * from final
