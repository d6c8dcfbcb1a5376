-- current_state_counts: facts match direct counts over the current state, and a fact table is
-- not empty when its sources have rows that qualify.
-- returns: one row per subject whose published count differs from the current-state count
with current_reports as (
    select * from int_current_reports
),

expected as (
    select 'reports' as subject, count(*) as n from current_reports
    union all
    select 'reads', count(*) from stg_reads
    where report_id in (select report_id from current_reports)
    union all
    select 'deliveries', count(*) from stg_alerts
    where report_id in (select report_id from current_reports)
    union all
    select 'report_stats', count(*) from current_reports
),

actual as (
    select 'reports' as subject, count(*) as n from fct_reports
    union all
    select 'reads', count(*) from fct_reads
    union all
    select 'deliveries', count(*) from fct_deliveries
    union all
    select 'report_stats', count(*) from report_stats
),

final as (
    select
        expected.subject,
        expected.n as expected_rows,
        actual.n as published_rows
    from expected
    inner join actual
        on expected.subject = actual.subject
    where expected.n <> actual.n
)

select * from final
