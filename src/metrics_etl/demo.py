"""`make demo`: generate sample data, run the flow, print sample API answers."""

from __future__ import annotations

import json

from metrics_etl import cli
from metrics_etl import settings as settings_mod
from metrics_etl.serve.reader import Reader


def _show(reader: Reader, path: str, account_id: int, limit: int = 4) -> None:
    """Print one request and the start of its answer."""
    status, body = reader.get(path, account_id)
    if isinstance(body, list) and len(body) > limit:
        shown: object = [*body[:limit], f"... {len(body) - limit} more"]
    elif isinstance(body, dict) and "report_stats" in body:
        shown = {**body, "report_stats": body["report_stats"][:2]}
    else:
        shown = body
    print(f"\nGET {path}  (account {account_id}) -> {status}")
    print(json.dumps(shown, indent=2))


def main() -> int:
    """Run the demo end to end on the default folders."""
    cfg = settings_mod.load()
    raw, warehouse = cfg.raw, cfg.warehouse
    marker = raw / "_generator.json"
    if not marker.exists() or json.loads(marker.read_text()).get("events") != cfg.demo_events:
        code = cli.main(["generate", "--raw", str(raw), "--events", str(cfg.demo_events)])
        if code:
            return code
    as_of = json.loads(marker.read_text())["as_of"]
    code = cli.main(["run", "--raw", str(raw), "--warehouse", str(warehouse), "--as-of", as_of])
    if code:
        return code
    reader = Reader(warehouse)
    snap = reader.snapshot()
    top = snap.conn.execute(
        """
        select c.channel_id, c.account_id, a.username, min(f.created_at), max(f.created_at)
        from fct_reports as f
        join dim_channels as c on f.channel_id = c.channel_id
        join dim_accounts as a on c.account_id = a.account_id
        where a.timezone = 'America/New_York' and not c.personal
        group by all order by count(*) desc limit 1
        """
    ).fetchall()
    if not top:
        print("no reports were published; nothing to show")
        return 0
    channel, account, org, _, last = top[0]
    end = last.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    window = f"channel_id={channel}&start_date=2017-03-01T00:00:00-05:00&end_date={end}"
    print(f"\nSample answers for the busiest New York channel ({channel}, organization '{org}'):")
    for endpoint in (
        "reports_over_time",
        "reports_per_user",
        "reports_per_state",
        "reports_per_day_hour",
    ):
        _show(reader, f"/api/v4/analytics/{endpoint}?{window}", account)
    _show(
        reader, f"/api/v4/analytics/reports_over_time?{window}&datetime_range_width=month", account
    )
    _show(
        reader,
        f"/api/v4/analytics/reports_read?{window}&fields=total_reads,unique_reads,report_readers,reports_seen",
        account,
    )
    _show(
        reader,
        f"/api/v4/analytics/user_awareness?{window}&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened",
        account,
    )
    _show(reader, f"/api/v4/analytics/reports_images?{window}", account, limit=2)
    _show(reader, f"/batch/{org}/report_stats?per_page=2&page=2", account)
    _show(
        reader,
        f"/api/v4/analytics/reports_per_user?channel_id={channel}&start_date=2017-02-01&end_date=2017-01-01",
        account,
    )
    print(
        f'\nAd-hoc SQL: .venv/bin/metrics-etl sql --warehouse {warehouse} "select * from rejects limit 5"'
    )
    print(
        f"Serve over HTTP: .venv/bin/metrics-etl keys create --warehouse {warehouse} --account-id {account}"
    )
    print(f"                 .venv/bin/metrics-etl serve --warehouse {warehouse}")
    reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
