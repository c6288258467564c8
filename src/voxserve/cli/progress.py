"""Progress bars on stderr, one per file, measured in seconds of decoded audio."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class AudioSecondsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(f"{task.completed:.1f} s", style="progress.download")
        return Text(f"{task.completed:.1f}/{task.total:.1f} s", style="progress.download")


class FileBar:
    """One file's bar. Its total is unknown (a pulsing bar) until the audio is decoded."""

    def __init__(self, progress: Progress, task: TaskID, name: str) -> None:
        self._progress = progress
        self._task = task
        self._name = name
        self._total: float | None = None

    def set_total(self, seconds: float | None) -> None:
        self._total = seconds
        self._progress.update(self._task, total=seconds)

    def advance_to(self, seconds: float) -> None:
        done = seconds if self._total is None else min(seconds, self._total)
        self._progress.update(self._task, completed=done)

    def fail(self) -> None:
        self._progress.update(self._task, description=f"{self._name} (failed)", total=0.0, completed=0.0)

    def finish(self) -> None:
        if self._total is None:
            self._total = 0.0
            self._progress.update(self._task, total=0.0)
        self._progress.update(self._task, completed=self._total)


class Bars:
    """The bars of one command, drawn only when `enabled` (stderr is a terminal and not --quiet)."""

    def __init__(self, enabled: bool, stdout_is_terminal: bool) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            AudioSecondsColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not enabled,
            # Results written to stdout go above the bars only when stdout is the same terminal;
            # redirecting a piped stdout would send the results to stderr.
            redirect_stdout=stdout_is_terminal,
            redirect_stderr=False,
        )

    def add(self, name: str) -> FileBar:
        return FileBar(self._progress, self._progress.add_task(name, total=None), name)

    def note(self, message: str) -> None:
        """A line above the bars (stderr), shown only with the bars."""
        if self.enabled:
            self._progress.console.print(message, markup=False, highlight=False)

    def error(self, message: str) -> None:
        """A line on stderr, above the bars when they are drawn."""
        if self.enabled:
            self._progress.console.print(message, markup=False, highlight=False, style="red", soft_wrap=True)
        else:
            print(message, file=sys.stderr, flush=True)

    def __enter__(self) -> Bars:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._progress.stop()
