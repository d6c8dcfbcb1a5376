"""Signals as the interpreter notes them, whatever their Python handler then did.

Library code can swallow the exception a signal handler raises: DuckDB tries `import pandas` on
every query with parameters and drops whatever that import raises, Prefect's TerminationSignal
included, so a SIGTERM can vanish and a run go on. Before any handler runs, the interpreter
writes each signal's number to its wakeup file descriptor (`signal.set_wakeup_fd`); a `Note`
is a pipe there, read when it suits the caller.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import suppress
from types import TracebackType


class Note:
    """Within the block, the number of every signal that reaches the process. Nested notes
    pass what they saw on to the enclosing one when they end. Outside the main thread, where
    a process's wakeup descriptor cannot be set, it notes nothing."""

    def __init__(self) -> None:
        self._fds: tuple[int, int] | None = None
        self._previous = -1
        self.seen: list[int] = []

    def __enter__(self) -> Note:
        if threading.current_thread() is not threading.main_thread():
            return self
        read, write = os.pipe()
        try:
            for fd in (read, write):
                os.set_blocking(fd, False)
            self._previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except BaseException:
            os.close(read)
            os.close(write)
            raise
        self._fds = (read, write)
        return self

    def take(self) -> list[int]:
        """The signals noted since the last call, in the order they came."""
        new: list[int] = []
        while self._fds is not None:
            try:
                new += os.read(self._fds[0], 512)
            except BlockingIOError:
                break
        self.seen += new
        return new

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._fds is None:
            return
        try:
            signal.set_wakeup_fd(self._previous)  # first: a signal from now on goes there
            self.take()
            if self._previous != -1 and self.seen:
                with suppress(OSError):  # the enclosing note is full or gone
                    os.write(self._previous, bytes(self.seen))
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = None


def terminate(signum: int) -> None:
    """Raise Prefect's TerminationSignal for `signum`, as its handler does during a flow run,
    unless one is already being raised (Prefect's engine, stopped by one, sends the signal
    again to the handler it found)."""
    from prefect.exceptions import TerminationSignal

    if not isinstance(sys.exc_info()[1], TerminationSignal):
        raise TerminationSignal(signal=signum)
