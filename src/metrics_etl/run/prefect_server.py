"""The Prefect API `metrics-etl schedule` serves on, and serving a deployment until a signal.

Scheduled runs need a Prefect server whose scheduler service runs: Prefect's temporary
(ephemeral) server does not run it, so `schedule` uses the server in PREFECT_API_URL or starts
`prefect server start` as a child process of its own and stops it on exit.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from metrics_etl.errors import UserError

# How long a child server may take to answer /api/health (a cold start on a busy 2-core
# machine takes 10-30 s: database migrations, UI files).
STARTUP_TIMEOUT_S = 120.0
# How long a child server, or the runner's in-flight runs, get to stop before being killed.
STOP_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """SIGINT or SIGTERM arrived; unwinds so that children are stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: Any) -> None:
    """Signal handler: raise Stopped so that finally-blocks run."""
    raise Stopped(signum)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise Stopped; restore the old handlers after."""
    previous = {s: signal.signal(s, _raise_stopped) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def sigterm_ends_the_process_cleanly() -> Iterator[list[int]]:
    """Within the block, SIGTERM raises Prefect's TerminationSignal, and the list yielded notes
    it. Prefect's flow engine, stopped by SIGTERM, sends the signal again to the handler it
    found: by default the process would die there, before exit handlers stop Prefect's
    temporary server (left running, orphaned). This handler lets the exception the engine is
    raising go on, so that the caller can exit as usual."""
    from metrics_etl.run.signals import terminate

    noted: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        """Note the signal, and stop (see `terminate`)."""
        noted.append(signum)
        terminate(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are ignored (a stop already under way)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api_problem() -> str | None:
    """None if the configured Prefect API answers its health check, else what went wrong."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
    except Exception as exc:  # the client raises for bad URLs and refused connections alike
        error = exc
    return None if error is None else f"{type(error).__name__}: {error}".splitlines()[0]


def scheduler_enabled(api_url: str) -> bool | None:
    """Whether the server at api_url runs its scheduler service (None: it does not say)."""
    try:
        response = httpx.get(f"{api_url}/admin/settings", timeout=10)
        response.raise_for_status()
        return bool(response.json()["server"]["services"]["scheduler"]["enabled"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None  # e.g. Prefect Cloud, which has no /admin/settings and always schedules


def _log_tail(path: Path) -> str:
    """The last non-empty line of a log file, for an error message."""
    with suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "no output"


def start_server(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `prefect server start` (scheduler on) as a child; wait until its API answers."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "true"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    command = [sys.executable, "-m", "prefect", "server", "start"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it in order
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise UserError(
                    f"the Prefect server exited with code {process.returncode} while starting "
                    f"({_log_tail(log_path)}); see {log_path}"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    return process, api_url
            if time.monotonic() > deadline:
                raise UserError(
                    f"the Prefect server did not answer within {STARTUP_TIMEOUT_S:.0f} s; "
                    f"see {log_path}"
                )
            time.sleep(0.5)
    except BaseException:
        stop_server(process)
        raise


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a child server and everything it started; kill it if it does not stop in time."""
    with signals_ignored():
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything the server left in its group


@contextmanager
def prefect_api() -> Iterator[str]:
    """The API URL to serve on: PREFECT_API_URL's server, or a child server started here."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        problem = _api_problem()
        if problem:
            raise UserError(
                f"the Prefect API at {configured} (PREFECT_API_URL) does not answer ({problem}); "
                "start that server, or unset PREFECT_API_URL to have metrics-etl start one"
            )
        if scheduler_enabled(configured) is False:
            raise UserError(
                f"the Prefect server at {configured} runs without its scheduler service, so no "
                "scheduled run would ever fire; restart it with "
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=true"
            )
        yield configured
        return
    log_path = Path(PREFECT_HOME.value()) / "metrics-etl-server.log"
    process, api_url = start_server(log_path)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url  # for the flow-run processes the runner starts
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop_server(process)


def serve(deployment: Any, limit: int = 1) -> int:
    """Serve a deployment until SIGINT or SIGTERM arrives; return that signal's number."""
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        return asyncio.run(_serve(deployment, limit))
    finally:
        for s, handler in previous.items():  # asyncio resets the handlers it had set
            signal.signal(s, handler)


async def _serve(deployment: Any, limit: int) -> int:
    """Run a Prefect Runner for one deployment until a stop signal, then stop it cleanly."""
    from prefect.runner import Runner

    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def on_signal(signum: int) -> None:
        """Record the first stop signal; later ones change nothing."""
        if not received.done():
            received.set_result(signum)

    for s in STOP_SIGNALS:
        loop.add_signal_handler(s, on_signal, s)
    try:
        runner = Runner(name=deployment.name, limit=limit, pause_on_shutdown=True)
        await runner.add_deployment(deployment)  # type: ignore[misc]  # async_dispatch
        running: asyncio.Future[Any] = asyncio.ensure_future(runner.start())
        # Runner.start sets a SIGTERM handler of its own (it exits 0 and leaves `astop`
        # un-awaited) before its first await: after one turn of the loop, put ours back.
        await asyncio.sleep(0)
        loop.add_signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
        either: set[asyncio.Future[Any]] = {received, running}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not received.done():
            running.result()  # the runner stopped by itself: raise what stopped it
            raise UserError("the Prefect runner stopped unexpectedly")
        await _stop_runner(runner, running)
        await _flush_to_api()
    finally:
        for s in STOP_SIGNALS:
            loop.remove_signal_handler(s)
    return received.result()


async def _stop_runner(runner: Any, running: asyncio.Future[Any]) -> None:
    """Stop a runner (a signal during its start-up waits for the start), bounded in time."""
    deadline = loop_time() + STOP_TIMEOUT_S
    while not runner.started and not running.done() and loop_time() < deadline:
        await asyncio.sleep(0.1)
    if runner.started:
        await runner.astop()  # cancels runs in flight, pauses the schedule, closes the client
    with suppress(Exception, asyncio.CancelledError):
        # Prefect gives a cancelled run's process 30 s to exit before it kills it.
        await asyncio.wait_for(running, STOP_TIMEOUT_S + 30)


def loop_time() -> float:
    """The running event loop's clock."""
    return asyncio.get_running_loop().time()


async def _flush_to_api() -> None:
    """Send the logs and events still queued for the API now, while its server is up."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        drained = worker.drain_all(timeout=STOP_TIMEOUT_S)
        if inspect.isawaitable(drained):
            await drained
