"""The `metrics-etl` command line: generate, run, sql, serve, keys, schedule, watch."""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from metrics_etl import __version__
from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError
from metrics_etl.timeparse import parse_instant

EXIT_GRACE_S = (
    30.0  # a stopped watch's exit (Prefect's flush of logs and events) takes at most this
)


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


def _at_least(low: int, high: int = 2**63 - 1) -> Callable[[str], int]:
    """argparse type for integers of at least `low` (and at most `high`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"'{text}' must be at least {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"'{text}' must be at most {high:,}")
        return value

    return parse


def _name(text: str) -> str:
    """argparse type for a Prefect deployment's name."""
    if not text.strip() or any(c in text for c in "/%&><"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a name; give one without / % & > <")
    return text


def _dask_address(text: str) -> str:
    """argparse type for a Dask scheduler's address (tcp://host:port)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        port = None
    if not (parts.scheme and parts.hostname and port):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a Dask scheduler's address; give one like tcp://127.0.0.1:8786"
        )
    return text


_positive = _at_least(1)
MAX_EVENTS = 10**9  # the generator holds arrays per event in memory
MAX_INTERVAL_S = 10 * 366 * 86_400  # ten years between scheduled runs
FOLDERS = ("raw", "warehouse")  # the arguments that name folders
TABLE_ROWS = 9_999  # the most rows DuckDB's box rendering shows with their count


def _setting(text: str, name: str) -> str:
    """Help text naming a setting's default and its environment variable."""
    env, default = settings_mod.ENV[name]
    return f"{text} (default: {default}; env {env})"


def _default(text: str, default: object) -> str:
    """Help text naming a flag's default."""
    return f"{text} (default: {default})"


def build_parser() -> Parser:
    """The argument parser for every command."""
    cfg = settings_mod.load()
    parser = Parser(prog="metrics-etl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"metrics-etl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    raw_help = _setting("raw folder: <raw>/<stream>/*.jsonl|.jsonl.gz|.parquet", "raw")
    wh_help = _setting("warehouse folder (snapshots, state, keys)", "warehouse")

    gen = sub.add_parser("generate", help="write deterministic synthetic raw data")
    gen.add_argument("--raw", type=Path, default=cfg.raw, help=raw_help, metavar="DIR")
    gen.add_argument(
        "--events",
        type=_at_least(settings_mod.MIN_EVENTS, MAX_EVENTS),
        default=20_000,
        help=_default(f"how many events to write, at least {settings_mod.MIN_EVENTS:,}", "20,000"),
    )
    gen.add_argument("--seed", type=int, default=7, help=_default("random seed", 7))

    run = sub.add_parser("run", help="run the ETL flow once (load, transform, audit, publish)")
    run.add_argument("--raw", type=Path, default=cfg.raw, help=raw_help, metavar="DIR")
    run.add_argument("--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR")
    run.add_argument(
        "--as-of",
        type=_instant,
        default=None,
        metavar="TS",
        help="as-of time of report stats, ISO 8601 (default: now; a run with nothing new "
        "keeps the as-of time of the current snapshot)",
    )
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="forget what was loaded and rebuild from every raw file (default: off)",
    )
    dask = run.add_mutually_exclusive_group()
    dask.add_argument(
        "--workers",
        type=_at_least(1),
        default=None,
        metavar="N",
        help="partition the transform across a local Dask cluster of N processes "
        "(default: the single-process build)",
    )
    dask.add_argument(
        "--dask-address",
        type=_dask_address,
        default=None,
        metavar="URL",
        help="partition the transform across the Dask cluster at URL (tcp://host:port); its "
        "workers must read and write the warehouse folder",
    )
    run.add_argument(
        "--partitions",
        type=_at_least(1),
        default=None,
        metavar="P",
        help="hash partitions of a --workers/--dask-address run (default: its worker threads)",
    )

    sql = sub.add_parser("sql", help="run ad-hoc SQL over the published tables")
    sql.add_argument("--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR")
    sql.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help=_default("output format; json is an array of objects", "table"),
    )
    sql.add_argument(
        "--max-rows",
        type=_positive,
        default=None,
        metavar="N",
        help="print at most N rows (default: all rows; the table format shows at most "
        f"{TABLE_ROWS:,})",
    )
    sql.add_argument("query", help="DuckDB SQL over the current snapshot's tables")

    serve = sub.add_parser("serve", help="serve the APIs over HTTP")
    serve.add_argument("--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR")
    serve.add_argument("--host", default="127.0.0.1", help=_default("address to bind", "127.0.0.1"))
    serve.add_argument(
        "--port", type=_at_least(1, 65_535), default=8000, help=_default("port", 8000)
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help=_default(
            "worker processes; they share the mapped serving segments and each follows "
            "`current` on its own",
            1,
        ),
    )

    get = sub.add_parser(
        "get", help="answer one API request in-process; prints the JSON body on stdout"
    )
    get.add_argument("--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR")
    get.add_argument(
        "--account-id", type=int, required=True, help="the caller's account (required)"
    )
    get.add_argument("path", help="e.g. '/api/v4/analytics/reports_per_user?channel_id=1&...'")

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=Parser)
    create = keys_sub.add_parser("create", help="create a key for an account (printed last)")
    create.add_argument(
        "--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR"
    )
    create.add_argument(
        "--account-id", type=int, required=True, help="the account the key reads (required)"
    )
    create.add_argument(
        "--allow-unknown-account",
        action="store_true",
        help="create the key even if the current snapshot has no such account (or none is published)",
    )
    listing = keys_sub.add_parser("list", help="list keys (ids, accounts, status)")
    listing.add_argument(
        "--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR"
    )
    listing.add_argument(
        "--json", action="store_true", help="print a JSON array (default: a table with a header)"
    )
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument(
        "--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR"
    )
    revoke.add_argument("key_id", help="the id `keys list` shows")

    sched = sub.add_parser(
        "schedule",
        help="run the flow on a schedule until stopped (Prefect serve; starts a Prefect "
        "server unless PREFECT_API_URL names one)",
    )
    when = sched.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", help="cron expression, e.g. '*/15 * * * *' (this or --interval is required)"
    )
    when.add_argument(
        "--interval",
        type=_at_least(1, MAX_INTERVAL_S),
        metavar="SECONDS",
        help="seconds between runs (this or --cron is required)",
    )
    sched.add_argument("--raw", type=Path, default=cfg.raw, help=raw_help, metavar="DIR")
    sched.add_argument("--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR")
    sched.add_argument(
        "--name",
        type=_name,
        default="metrics-etl-scheduled",
        help=_default("the Prefect deployment's name", "metrics-etl-scheduled"),
    )
    watch = sub.add_parser(
        "watch",
        help="run the flow in this process whenever new raw files land, until stopped (no "
        "start-up cost per run)",
    )
    watch.add_argument("--raw", type=Path, default=cfg.raw, help=raw_help, metavar="DIR")
    watch.add_argument("--warehouse", type=Path, default=cfg.warehouse, help=wh_help, metavar="DIR")
    watch.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help=_default("seconds between checks of the raw folder", 1),
    )
    watch.add_argument(
        "--max-runs",
        type=_positive,
        default=None,
        metavar="N",
        help="stop after N runs (default: run until SIGINT or SIGTERM)",
    )
    return parser


def load_flow():  # type: ignore[no-untyped-def]
    """The metrics-etl flow (defined in the package, so it runs from an installed wheel)."""
    from metrics_etl.run.flow import etl

    return etl


def quiet_prefect() -> None:
    """Prefect settings for a run or a schedule: no telemetry or analytics (no network here),
    and a patient start-up of its temporary server on a busy machine; each kept if already set."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def run_flow(etl: Any, args: argparse.Namespace) -> Any:
    """Run the flow once as `run`'s arguments say (on Dask with --workers/--dask-address); its
    final state."""
    partitions, threads = 0, 0
    with ExitStack() as stack:
        if args.workers or args.dask_address:
            from metrics_etl.run import dask_build

            workers = args.workers or dask_build.cluster_workers(args.dask_address)
            partitions = args.partitions or workers
            threads = max(1, settings_mod.load().threads // args.workers) if args.workers else 0
            runner = dask_build.task_runner(args.workers, args.dask_address)
            etl = etl.with_options(task_runner=runner)
            stack.enter_context(dask_build.shared_prefect_api())
            dask_build.quiet_dask()
        return etl(
            raw=str(args.raw),
            warehouse=str(args.warehouse),
            as_of=args.as_of,
            full_refresh=args.full_refresh,
            partitions=partitions,
            threads=threads,
            return_state=True,
        )


def cmd_run(args: argparse.Namespace) -> int:
    """Run the flow once and print its summary (at once, without a flow, when nothing is new)."""
    from prefect.exceptions import TerminationSignal

    from metrics_etl.publish.snapshot import current_id
    from metrics_etl.run import plan, prefect_server

    if args.partitions and not (args.workers or args.dask_address):
        raise UserError("--partitions needs --workers N or --dask-address URL")
    idle = plan.check(args.raw, args.warehouse, args.as_of, args.full_refresh)
    if idle is not None:
        print(plan.format_summary(idle))
        return 0
    quiet_prefect()
    etl = load_flow()
    before = current_id(args.warehouse)
    with prefect_server.sigterm_ends_the_process_cleanly() as stopped:
        try:
            result = run_flow(etl, args)
        except TerminationSignal:
            stopped.append(signal.SIGTERM)
    if stopped:  # stopping: Prefect's exit flush and its server's stop run undisturbed
        for signum in prefect_server.STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        published = current_id(args.warehouse) != before
        sys.stderr.write(
            "metrics-etl run: stopped by SIGTERM; "
            + ("after its snapshot was published\n" if published else "nothing was published\n")
        )
        return 128 + signal.SIGTERM
    if result.is_failed():
        raise UserError(result.message or "the run failed; see the log above")
    print(plan.format_summary(plan.RunSummary(**result.result())))
    return 0


# What `sql` runs: statements that only read (a snapshot's files are shared and immutable)
READING = ("SELECT", "EXPLAIN", "PRAGMA", "VARIABLE_SET", "SET")


def one_reading_statement(query: str) -> str:
    """The one statement of an ad-hoc query, if it only reads (else a UserError)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as error:
        raise UserError(str(error).replace("\n", " ")) from None
    if len(statements) != 1:
        raise UserError(f"give one SQL statement, not {len(statements)}")
    (statement,) = statements
    kind = statement.type.name
    if kind not in READING:
        raise UserError(
            f"metrics-etl sql only reads, and this is a {kind} statement; to save a result, "
            "use --format csv or json and redirect it (published files are never written)"
        )
    return statement.query


def cmd_sql(args: argparse.Namespace) -> int:
    """Print the result of an ad-hoc query over the current snapshot."""
    import duckdb

    from metrics_etl.serve.reader import open_snapshot

    statement = one_reading_statement(args.query)
    with open_snapshot(args.warehouse) as snap:
        try:
            relation = snap.conn.sql(statement)
            if relation is None:
                print("ok")
                return 0
            if args.max_rows is not None:
                relation = relation.limit(args.max_rows)
            PRINTERS[args.format](relation)
        except duckdb.Error as error:
            raise UserError(str(error).replace("\n", " ")) from None
    return 0


def _print_table(relation: Any) -> None:
    """A relation as a table (DuckDB's box rendering), from one run of its query: every row, up
    to TABLE_ROWS (past them, the count and a pointer to csv and json on stderr)."""
    import duckdb

    rows = relation.limit(TABLE_ROWS + 1).to_arrow_table()
    shown = rows.slice(0, TABLE_ROWS)
    duckdb.from_arrow(shown).show(max_rows=max(shown.num_rows, 1), max_width=10_000)
    if rows.num_rows > TABLE_ROWS:
        sys.stderr.write(
            f"metrics-etl sql: more than {TABLE_ROWS:,} rows; the table format shows the first "
            f"{TABLE_ROWS:,}: use --format csv or json for every row\n"
        )


def _batches(relation: Any, rows: int = 10_000) -> Iterator[list[tuple]]:
    """A relation's rows in batches, the first fetched at once (a query that fails, fails
    here: before the caller writes anything)."""
    first = relation.fetchmany(rows)
    return itertools.chain([first] if first else [], iter(lambda: relation.fetchmany(rows), []))


def _print_csv(relation: Any) -> None:
    """A relation as CSV with a header, streamed in batches."""
    import csv

    out = csv.writer(sys.stdout, lineterminator="\n")
    batches = _batches(relation)
    out.writerow(relation.columns)
    for batch in batches:
        out.writerows(batch)


def _plain(value: Any) -> Any:
    """A value as orjson writes it, for the standard library's `json`: dates and times in ISO
    8601, map keys as strings, NaN and infinities as null (integers stay exact)."""
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, date | time):
        return value.isoformat()
    return value


def _key(key: Any) -> str:
    """A map key as a JSON object key (as orjson's OPT_NON_STR_KEYS writes it)."""
    plain = _plain(key)
    return plain if isinstance(plain, str) else str(plain)


def _json_row(row: dict[str, Any]) -> str:
    """One row as compact JSON: by orjson, or by the standard library for what orjson refuses,
    integers past 64 bits (HUGEINT, UHUGEINT), which it writes exactly."""
    import json

    import orjson

    try:
        return orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(_plain(row), default=str, ensure_ascii=False, separators=(",", ":"))


def _print_json(relation: Any) -> None:
    """A relation as a JSON array of objects, streamed in batches."""
    columns = relation.columns
    batches = _batches(relation)
    sys.stdout.write("[")
    first = True
    for batch in batches:
        for row in batch:
            item = _json_row(dict(zip(columns, row, strict=True)))
            sys.stdout.write(("\n" if first else ",\n") + item)
            first = False
    sys.stdout.write("\n]\n")


PRINTERS: dict[str, Callable[[Any], None]] = {
    "table": _print_table,
    "csv": _print_csv,
    "json": _print_json,
}


def cmd_get(args: argparse.Namespace) -> int:
    """Answer one request in-process: the JSON body on stdout, the status on stderr; exit 0 only
    for a 200."""
    import json

    from metrics_etl.serve.reader import Reader

    status, body = Reader(args.warehouse).get(args.path, args.account_id)
    print(json.dumps(body, indent=2))
    sys.stderr.write(f"HTTP {status}\n")
    return 0 if status == 200 else 1


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys."""
    from metrics_etl.serve import keys

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
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # each worker process builds its app from the environment (server.app_from_env)
    os.environ["METRICS_ETL_WAREHOUSE"] = str(args.warehouse.resolve())
    config = uvicorn.Config(
        "metrics_etl.serve.http:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
    )
    if args.workers == 1:
        uvicorn.Server(config).run()
        return 0
    # Workers share a socket uvicorn binds without naming the protocol, so asyncio does not
    # turn Nagle's algorithm off on their connections, and every answer waited ~40 ms for a
    # delayed ACK; connections accepted from this socket inherit TCP_NODELAY from it.
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()
    return 0


def build_deployment(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A Prefect deployment of the flow on the given cron or interval schedule."""
    quiet_prefect()  # before Prefect is imported: its telemetry starts at import
    from prefect.client.schemas.schedules import CronSchedule

    if args.cron is not None:
        try:
            if len(args.cron.split()) != 5:  # croniter also takes seconds: a run every second
                raise ValueError(args.cron)
            CronSchedule(cron=args.cron)
        except ValueError:
            raise UserError(
                f"--cron '{args.cron}' is not a cron expression of five fields (minute, "
                "hour, day of month, month, day of week), e.g. '*/15 * * * *'"
            ) from None
    when = {"cron": args.cron} if args.cron is not None else {"interval": args.interval}
    from prefect.types.entrypoint import EntrypointType

    return load_flow().to_deployment(
        name=args.name,
        # by module, not by file path: runs from an installed wheel and from any folder
        entrypoint_type=EntrypointType.MODULE_PATH,
        parameters={"raw": str(args.raw.resolve()), "warehouse": str(args.warehouse.resolve())},
        **when,
    )


def cmd_schedule(args: argparse.Namespace) -> int:
    """Serve the flow on its schedule until SIGINT (exit 130) or SIGTERM (exit 143)."""
    from metrics_etl.run import prefect_server

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


def cmd_watch(args: argparse.Namespace) -> int:
    """Run whenever new raw files land, until SIGINT (exit 130) or SIGTERM (exit 143)."""
    from metrics_etl.run import prefect_server, watch

    if not 0.01 <= args.poll <= 86_400:  # a shorter poll keeps a core busy looking
        raise UserError(f"--poll must be a number of seconds from 0.01 to 86400, not {args.poll}")
    quiet_prefect()
    print(f"watching {args.raw} every {args.poll:g} s; Ctrl-C to stop", flush=True)
    code = watch.watch(
        args.raw, args.warehouse, args.poll, lambda text: print(text, flush=True), args.max_runs
    )
    for signum in prefect_server.STOP_SIGNALS:  # stopping: Prefect's exit flush runs undisturbed
        signal.signal(signum, signal.SIG_IGN)
    if code == 1:
        sys.stderr.write("metrics-etl watch: error: its last run failed (see above)\n")
    elif code:
        sys.stderr.write(f"metrics-etl watch: stopped by {signal.Signals(code - 128).name}\n")
        sys.stderr.flush()
        # a bounded exit: Prefect's exit flush, or a helper thread of a step the signal cut short,
        # must not keep a stopped watch alive (seen once in CI: alive 180 s after this line)
        deadline = threading.Timer(EXIT_GRACE_S, os._exit, (code,))
        deadline.daemon = True
        deadline.start()
    return code


def cmd_generate(args: argparse.Namespace) -> int:
    """Write synthetic raw data."""
    from metrics_etl.generator.generate import generate

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
    "watch": cmd_watch,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one line."""
    try:
        parser = build_parser()
    except UserError as error:  # a setting's environment variable set wrongly
        sys.stderr.write(f"metrics-etl: error: {error}\n")
        return 1
    args = parser.parse_args(argv)
    try:
        for name in FOLDERS:
            folder = getattr(args, name, None)
            if folder is not None and folder.exists() and not folder.is_dir():
                raise UserError(f"--{name} {folder} is a file; give a folder")
        return COMMANDS[args.command](args)
    except UserError as error:
        sys.stderr.write(f"metrics-etl {args.command}: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`metrics-etl sql … | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit does not fail again
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
