-- current_state_counts: facts match direct counts over the current state, and a fact table is
-- not empty when its sources have rows that qualify.
-- returns: one row per subject whose published count differs from the current-state count
-- scope: all (whole-table counts, cheap)
with current_reports as (
    select * from int_current_reports
),

expected as (
    select
        'reports' as subject,
        count(*) as n
    from current_reports
    union all
    select
        'reads' as subject,
        count(*) as n
    from stg_reads
    where stg_reads.report_id in (select current_reports.report_id from current_reports)
    union all
    select
        'deliveries' as subject,
        count(*) as n
    from stg_alerts
    where stg_alerts.report_id in (select current_reports.report_id from current_reports)
    union all
    select
        'report_stats' as subject,
        count(*) as n
    from current_reports
),

actual as (
    select
        'reports' as subject,
        count(*) as n
    from fct_reports
    union all
    select
        'reads' as subject,
        count(*) as n
    from fct_reads
    union all
    select
        'deliveries' as subject,
        count(*) as n
    from fct_deliveries
    union all
    select
        'report_stats' as subject,
        count(*) as n
    from report_stats
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
