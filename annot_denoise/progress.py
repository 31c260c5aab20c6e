"""Progress reporting that core functions can use without printing themselves.

Core loops receive a :class:`Progress` and call ``task(...)``/``advance(...)``;
the CLI passes one backed by a rich progress bar, tests and libraries get the
silent default. ``--no-progress`` simply means the silent one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Task:
    """Handle for one running bar; ``advance`` is a no-op when silent."""

    def __init__(self, bar: Any = None, task_id: Any = None) -> None:
        self._bar, self._id = bar, task_id

    @property
    def visible(self) -> bool:
        """False for the silent default: callers can skip work done only for the bar."""
        return self._bar is not None

    def advance(self, n: float = 1, **fields: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._id, advance=n, info=_format_fields(fields))


class Progress:
    """Silent by default; ``Progress(enabled=True)`` draws rich bars on stderr."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[Task]:
        if not self.enabled:
            yield Task()
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("<"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with RichProgress(*columns, console=Console(stderr=True), transient=False) as bar:
            task_id = bar.add_task(description, total=total, info="")
            yield Task(bar, task_id)


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)
