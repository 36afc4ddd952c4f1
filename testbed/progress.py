"""Progress of a long job (simulating, emulating, AWC labelling and evaluation) on stderr.

On a terminal: a rich progress bar redrawn in place. Anywhere else (`make awc-eval > log`, a pipe, CI): one
plain line at the start, then one whenever another 10 % is done or `every_s` seconds passed since the last
line, and one at the end, so a log stays readable instead of holding hundreds of carriage-return updates.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class JobProgress:
    """`done` of `total` items (and how many of them failed); silent when disabled."""

    def __init__(
        self,
        description: str,
        total: int,
        enabled: bool = True,
        stream: IO[str] | None = None,
        every_s: float = 30.0,
        terminal: bool | None = None,
    ):
        self.description = description
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.terminal = terminal if terminal is not None else _isatty(self.stream)
        self.bar: Any = None
        self.task: Any = None
        self.started = 0.0
        self.done = self.failed = 0
        self._last_line = 0.0
        self._last_step = -1
        self._last_printed = (-1, -1)

    def __enter__(self) -> JobProgress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.enabled:
            return
        self.started = time.monotonic()
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
                refresh_per_second=4,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total, failed=0)
        else:
            self._line()

    def update(self, done: int, failed: int = 0, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done, self.failed = done, failed
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done, failed=failed, total=self.total)
            return
        if not self.started:
            return
        step = 10 * done // self.total if self.total else 10
        if step > self._last_step or time.monotonic() - self._last_line >= self.every_s:
            self._line()

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(f"[red]{text}[/]")
        else:
            print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.enabled and self.started and (self.done, self.failed) != self._last_printed:
            self._line()
        self.started = 0.0

    def _line(self) -> None:
        now = time.monotonic()
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        failed = f", {self.failed} failed" if self.failed else ""
        print(
            f"{self.description}: {self.done}/{self.total}{pct}{failed}, {now - self.started:.0f} s",
            file=self.stream,
            flush=True,
        )
        self._last_line = now
        self._last_step = 10 * self.done // self.total if self.total else 10
        self._last_printed = (self.done, self.failed)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
