"""Progress bars for long stages, on a terminal only, drawn by Prefect's own console."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any


def _prefect_console() -> Any:
    """The rich console of Prefect's console log handler, when it writes to a terminal."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and handler.console.is_terminal:
                return handler.console
    return None


class Bar:
    """One stage's bar: advanced once per item; does nothing when there is no display."""

    def __init__(self, progress: Any = None, task_id: Any = None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, item: object = None) -> None:
        """Count one item done (its name, if given, is shown beside the bar)."""
        if self._progress is not None:
            note = getattr(item, "rel", item)
            self._progress.update(self._task_id, advance=1, note="" if note is None else str(note))


class Display:
    """Bars with counts and elapsed time, on the terminal Prefect logs to; log lines print above
    them. Where the log is not a terminal (a file, a pipe, a worker), nothing is drawn."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._console: Any = None

    def __enter__(self) -> Display:
        console = _prefect_console()
        if console is not None:
            from rich.default_styles import DEFAULT_STYLES
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.theme import Theme

            # Prefect's console theme lacks rich's bar and progress styles
            styles = {
                k: v for k, v in DEFAULT_STYLES.items() if k.startswith(("bar.", "progress."))
            }
            console.push_theme(Theme(styles))
            self._console = console
            self._progress = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}", style="dim"),
                console=console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._console.pop_theme()

    @contextmanager
    def bar(self, label: str, total: int, unit: str) -> Iterator[Bar]:
        """A bar for one stage of `total` items, removed when the stage ends."""
        if self._progress is None or total == 0:
            yield Bar()
            return
        task_id = self._progress.add_task(label, total=total, unit=unit, note="")
        try:
            yield Bar(self._progress, task_id)
        finally:
            self._progress.remove_task(task_id)
