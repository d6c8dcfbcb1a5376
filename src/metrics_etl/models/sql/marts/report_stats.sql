-- model: report_stats
-- purpose: one row per current, not deleted report in a not deleted channel, with the report-stats
--     API's counts and email lists as of the run's as-of time, and its position in the
--     organization's pages (with and without personal channels, from int_report_positions).
-- grain: report_id
-- order_by: account_id, report_id
-- incremental: by_report_inputs
with reports as (
    select * from int_current_reports
),

positions as (
    select * from int_report_positions
),

accounts as (
    select * from stg_accounts
),

users as (
    select * from stg_users
    where email is not null
),

schedules as (
    select
        report_id,
        count(*) as active_schedules_count
    from stg_schedules
    where not is_deleted
        and not paused
    group by report_id
),

explorations as (
    select
        report_id,
        count(*) as explorations_count
    from stg_explorations
    group by report_id
),

views as (
    select
        report_id,
        count(*) as total_views_count
    from stg_reads
    group by report_id
),

run_emails as (
    select
        runs.report_id,
        runs.run_type,
        runs.ran_at,
        users.email
    from stg_report_runs as runs
    inner join users
        on runs.user_id = users.user_id
),

recent_manual as (
    select
        report_id,
        list_sort(list_distinct(list(email))) as emails
    from run_emails
    where run_type = 'manual'
        and ran_at >= recent_runs_start(getvariable('as_of')::timestamptz)
        and ran_at < getvariable('as_of')::timestamptz
    group by report_id
),

scheduled as (
    select
        report_id,
        list_sort(list_distinct(list(email))) as emails
    from run_emails
    where run_type = 'scheduled'
    group by report_id
),

editor_ids as (
    select
        report_id,
        user_id
    from reports
    union
    select
        report_id,
        user_id
    from stg_report_edits
),

editors as (
    select
        editor_ids.report_id,
        list_sort(list_distinct(list(users.email))) as emails
    from editor_ids
    inner join users
        on editor_ids.user_id = users.user_id
    group by editor_ids.report_id
),

final as (
    select
        reports.account_id,
        accounts.username as organization,
        reports.personal,
        reports.report_id,
        reports.token as report_token,
        coalesce(schedules.active_schedules_count, 0) as active_schedules_count,
        coalesce(explorations.explorations_count, 0) as explorations_count,
        coalesce(views.total_views_count, 0) as total_views_count,
        coalesce(recent_manual.emails, []) as recent_manual_run_creators_emails,
        coalesce(scheduled.emails, []) as scheduled_run_creators_emails,
        coalesce(editors.emails, []) as editors_emails,
        positions.position_all,
        positions.position_shared
    from reports
    inner join positions
        on reports.report_id = positions.report_id
    left join accounts
        on reports.account_id = accounts.account_id
    left join schedules
        on reports.report_id = schedules.report_id
    left join explorations
        on reports.report_id = explorations.report_id
    left join views
        on reports.report_id = views.report_id
    left join recent_manual
        on reports.report_id = recent_manual.report_id
    left join scheduled
        on reports.report_id = scheduled.report_id
    left join editors
        on reports.report_id = editors.report_id
)

select * from final
