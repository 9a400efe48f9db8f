"""The Rich progress bar: one task per scenario, advanced per finished request."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress

__all__ = ["Progress"]


class Progress:
    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self._bar: RichProgress | None = None
        if enabled:
            self._bar = RichProgress(
                TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console or Console(stderr=True), transient=False,
            )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    @contextlib.contextmanager
    def track(self, name: str, planned: Callable[[], int]) -> Iterator[Callable[[], None]]:
        """A callback that advances ``name``'s bar by one finished request."""
        bar = self._bar
        if bar is None:
            yield lambda: None
            return
        task = bar.add_task(name, total=planned())

        def advance() -> None:
            bar.advance(task)

        try:
            yield advance
        finally:
            done = bar.tasks[task].completed
            bar.update(task, total=max(done, 1), completed=max(done, 1))
