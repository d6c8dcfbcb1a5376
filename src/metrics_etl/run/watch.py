"""Watch the raw folder and run the flow in this process as soon as new files land.

A `metrics-etl run` process spends 2-4 s outside the pipeline (importing Prefect and the stack,
starting the flow run); a scheduled run spawns a fresh process each time, so it pays the same.
`metrics-etl watch` pays that once: it stays up, checks the raw folder every `poll` seconds
(the planning `run` does when nothing is new: well under a second, no flow started), and runs
the flow in-process when there is something to do. Each run is a Prefect flow run like any
other (on PREFECT_API_URL's server, or Prefect's temporary one for the process's lifetime).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.exceptions import TerminationSignal

from metrics_etl.errors import UserError
from metrics_etl.models.build import models_hash
from metrics_etl.run import plan
from metrics_etl.run.prefect_server import STOP_SIGNALS, Stopped
from metrics_etl.run.signals import Note, terminate

MAX_BACKOFF_S = 60.0  # a failing run is retried after poll, 2 poll, 4 poll, ... up to this


class StopFlag:
    """SIGINT/SIGTERM between runs stop at once. During a run, SIGINT stops after it (a second
    one stops at once); SIGTERM, which Prefect's flow engine takes over, stops the run at once.
    A run stopped part-way publishes nothing partial (the next run publishes what it would
    have).

    A handler's exception can be swallowed by library code (see run/signals.py), and the run
    then goes on: `take_noted`, after each run, stops the watch on a stop signal that the
    interpreter noted but no handler acted on.
    """

    def __init__(self, note: Note) -> None:
        self.signum: int | None = None
        self.running = False
        self.note = note

    def __call__(self, signum: int, frame: Any) -> None:
        if self.running and self.signum is None:
            self.signum = signum
            if signum == signal.SIGTERM:  # before or after the flow engine's own handler
                terminate(signum)
            return
        self.signum = signum
        raise Stopped(signum)

    def take_noted(self) -> None:
        """Stop on a stop signal the interpreter noted, if none is recorded yet."""
        for signum in self.note.take():
            if signum in STOP_SIGNALS and self.signum is None:
                self.signum = signum


@contextmanager
def stop_flag() -> Iterator[StopFlag]:
    """A StopFlag installed for SIGINT and SIGTERM, with a note of the signals that come,
    within the block."""
    with Note() as note:
        flag = StopFlag(note)
        previous = {s: signal.signal(s, flag) for s in STOP_SIGNALS}
        try:
            yield flag
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def run_once(raw: Path, warehouse: Path) -> plan.RunSummary | None:
    """Run the flow in this process if there is anything to do; its summary, or None if idle."""
    from metrics_etl.run.flow import etl

    if plan.check(raw, warehouse, None, False) is not None:
        return None
    state: Any = etl(raw=str(raw), warehouse=str(warehouse), return_state=True)
    if not state.is_completed():
        raise UserError(state.message or "the run failed; see the log above")
    return plan.RunSummary(**state.result())


def watch(
    raw: Path,
    warehouse: Path,
    poll_s: float,
    report: Callable[[str], None],
    max_runs: int | None = None,
) -> int:
    """Run whenever the raw folder has something new, until stopped; returns 128 + the signal
    (or, after `max_runs` runs, 0, or 1 when the last of them failed). A failed run is reported
    and retried after a growing pause."""
    from metrics_etl.run import flow  # noqa: F401  imported before files land, not by the first run

    runs, failures = 0, 0
    models = models_hash()
    with stop_flag() as flag:
        try:
            while flag.signum is None and (max_runs is None or runs < max_runs):
                if models_hash() != models:
                    raise UserError(
                        "the SQL models changed under this watch (an upgrade?): start it again"
                    )
                flag.running = True
                try:
                    summary = run_once(raw, warehouse)
                except TerminationSignal:  # SIGTERM, through Prefect's flow engine
                    flag.signum = signal.SIGTERM
                    break
                except Stopped:
                    raise
                except Exception as error:  # reported; the watch goes on
                    if flag.signum is not None:  # a stop signal interrupted it: not a failure
                        break
                    detail = str(error) if isinstance(error, UserError) else repr(error)
                    report(f"run failed: {detail}")
                    summary, runs, failures = None, runs + 1, failures + 1
                finally:
                    flag.running = False
                    flag.take_noted()
                if summary is not None:
                    report(plan.format_summary(summary))
                    runs, failures = runs + 1, 0
                    continue  # more may have landed during the run
                if flag.signum is None and (max_runs is None or runs < max_runs):
                    time.sleep(min(MAX_BACKOFF_S, poll_s * 2**failures) if failures else poll_s)
        except Stopped:
            pass
    if flag.signum is not None:
        return 128 + flag.signum
    return 1 if failures else 0
