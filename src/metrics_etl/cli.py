"""The `metrics-etl` command line: generate, run, sql, serve, keys, schedule."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError
from metrics_etl.timeparse import parse_instant

REPO = Path(__file__).resolve().parents[2]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that say what to do."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and the help command, then exit 2."""
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _instant(text: str) -> datetime:
    """argparse type for ISO 8601 instants."""
    try:
        return parse_instant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; use e.g. 2017-01-01T00:00:00Z") from None


def _positive(text: str) -> int:
    """argparse type for positive integers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


def build_parser() -> Parser:
    """The argument parser for every command."""
    cfg = settings_mod.load()
    parser = Parser(prog="metrics-etl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    gen = sub.add_parser("generate", help="write deterministic synthetic raw data")
    gen.add_argument("--raw", type=Path, default=cfg.raw)
    gen.add_argument("--events", type=_positive, default=20_000)
    gen.add_argument("--seed", type=int, default=7)

    run = sub.add_parser("run", help="run the ETL flow once (load, transform, audit, publish)")
    run.add_argument("--raw", type=Path, default=cfg.raw)
    run.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    run.add_argument(
        "--as-of", type=_instant, default=None, help="as-of time of report stats (default: now)"
    )
    run.add_argument("--full-refresh", action="store_true", help="rebuild from every raw file")

    sql = sub.add_parser("sql", help="run ad-hoc SQL over the published tables")
    sql.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    sql.add_argument("query")

    serve = sub.add_parser("serve", help="serve the APIs over HTTP")
    serve.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive, default=8000)

    get = sub.add_parser("get", help="answer one API request in-process and print the JSON")
    get.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    get.add_argument("--account-id", type=int, required=True)
    get.add_argument("path", help="e.g. '/api/v4/analytics/reports_per_user?channel_id=1&...'")

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=Parser)
    create = keys_sub.add_parser("create", help="create a key for an account (printed last)")
    create.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    create.add_argument("--account-id", type=int, required=True)
    create.add_argument(
        "--allow-unknown-account",
        action="store_true",
        help="create the key even if the current snapshot has no such account (or none is published)",
    )
    listing = keys_sub.add_parser("list", help="list keys (ids, accounts, status)")
    listing.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    revoke.add_argument("key_id")

    sched = sub.add_parser(
        "schedule",
        help="run the flow on a schedule until stopped (Prefect serve; starts a Prefect "
        "server unless PREFECT_API_URL names one)",
    )
    when = sched.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="cron expression, e.g. '*/15 * * * *'")
    when.add_argument("--interval", type=_positive, metavar="SECONDS", help="seconds between runs")
    sched.add_argument("--raw", type=Path, default=cfg.raw)
    sched.add_argument("--warehouse", type=Path, default=cfg.warehouse)
    sched.add_argument("--name", default="metrics-etl-scheduled")
    return parser


def load_flow():  # type: ignore[no-untyped-def]
    """Import the flow defined in flows/etl.py."""
    spec = importlib.util.spec_from_file_location(
        "metrics_etl_flows_etl", REPO / "flows" / "etl.py"
    )
    if spec is None or spec.loader is None:
        raise UserError(f"cannot find the flow at {REPO / 'flows' / 'etl.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Prefect finds the flow's source file through it
    spec.loader.exec_module(module)
    return module.etl


def cmd_run(args: argparse.Namespace) -> int:
    """Run the flow once and print its summary."""
    from metrics_etl import ingest, pipeline

    ingest.discover(args.raw)  # fail fast, before Prefect starts, on a missing raw folder
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    etl = load_flow()
    state = etl(
        raw=str(args.raw),
        warehouse=str(args.warehouse),
        as_of=args.as_of,
        full_refresh=args.full_refresh,
        return_state=True,
    )
    if state.is_failed():
        raise UserError(state.message or "the run failed; see the log above")
    summary = pipeline.RunSummary(**state.result())
    print(pipeline.format_summary(summary))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Print the result of an ad-hoc query over the current snapshot."""
    import duckdb

    from metrics_etl.reader import open_snapshot

    with open_snapshot(args.warehouse) as snap:
        try:
            relation = snap.conn.sql(args.query)
        except duckdb.Error as error:
            raise UserError(str(error).replace("\n", " ")) from None
        if relation is None:
            print("ok")
        else:
            relation.show(max_rows=100, max_width=200)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Answer one request in-process and print the status and JSON body."""
    import json

    from metrics_etl.reader import Reader

    status, body = Reader(args.warehouse).get(args.path, args.account_id)
    print(status)
    print(json.dumps(body, indent=2))
    return 0 if status == 200 else 1


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys."""
    from metrics_etl import keys

    store = keys.KeyStore(args.warehouse)
    if args.keys_command == "create":
        if not args.allow_unknown_account:
            keys.require_account(args.warehouse, args.account_id)
        key_id, secret = store.create(args.account_id)
        print(f"created key {key_id} for account {args.account_id}; it is shown only once:")
        print(secret)
    elif args.keys_command == "list":
        rows = store.list()
        if args.json:
            import json

            print(json.dumps(rows, indent=1))
            return 0
        print(f"{'key_id':<8}  {'account_id':>10}  {'status':<7}  {'created_at':<25}  revoked_at")
        for row in rows:
            status = "revoked" if row["revoked_at"] else "active"
            print(
                f"{row['key_id']:<8}  {row['account_id']:>10}  {status:<7}  "
                f"{row['created_at']:<25}  {row['revoked_at'] or '-'}"
            )
    else:
        revoked_at = store.revoke(args.key_id)
        if revoked_at is None:
            print(f"revoked key {args.key_id}")
        else:
            print(f"key {args.key_id} was already revoked at {revoked_at}; nothing changed")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the APIs over HTTP."""
    import uvicorn

    from metrics_etl.server import create_app

    uvicorn.run(create_app(args.warehouse), host=args.host, port=args.port, log_level="info")
    return 0


def build_deployment(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A Prefect deployment of the flow on the given cron or interval schedule."""
    from prefect.client.schemas.schedules import CronSchedule

    if args.cron is not None:
        try:
            CronSchedule(cron=args.cron)
        except ValueError:
            raise UserError(
                f"--cron '{args.cron}' is not a valid cron expression, e.g. '*/15 * * * *'"
            ) from None
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    when = {"cron": args.cron} if args.cron is not None else {"interval": args.interval}
    return load_flow().to_deployment(
        name=args.name,
        parameters={"raw": str(args.raw.resolve()), "warehouse": str(args.warehouse.resolve())},
        **when,
    )


def cmd_schedule(args: argparse.Namespace) -> int:
    """Serve the flow on its schedule until SIGINT (exit 130) or SIGTERM (exit 143)."""
    from metrics_etl import prefect_server

    deployment = build_deployment(args)
    every = f"cron '{args.cron}'" if args.cron is not None else f"every {args.interval} s"
    try:
        with prefect_server.stop_signals_raise(), prefect_server.prefect_api() as api_url:
            dashboard = api_url.removesuffix("/api")
            print(
                f"serving flow 'metrics-etl', deployment '{args.name}', {every}, on the Prefect "
                f"API {api_url} (dashboard {dashboard}); Ctrl-C to stop",
                flush=True,
            )
            signum = prefect_server.serve(deployment)
    except prefect_server.Stopped as stop:
        signum = stop.signum
    sys.stderr.write(f"metrics-etl schedule: stopped by {signal.Signals(signum).name}\n")
    return 128 + signum


def cmd_generate(args: argparse.Namespace) -> int:
    """Write synthetic raw data."""
    from metrics_etl.generate import generate

    summary = generate(args.raw, events=args.events, seed=args.seed)
    files = summary["files"]
    bad = sum(summary["bad_records"].values())
    records = sum(summary["records"].values())
    print(f"wrote {records:,} records ({bad} bad) in {len(files)} files under {args.raw}")
    print(f"suggested --as-of {summary['as_of']}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "run": cmd_run,
    "sql": cmd_sql,
    "serve": cmd_serve,
    "get": cmd_get,
    "keys": cmd_keys,
    "schedule": cmd_schedule,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one line."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        sys.stderr.write(f"metrics-etl {args.command}: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
