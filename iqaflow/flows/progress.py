"""Live progress for the process that runs a flow (the CLI installs a rich bar; library use gets none).

A module-level hook rather than a flow parameter: parameters are sent to the Prefect API and
must be serialisable, and progress only matters in the process that waits on the shards.
"""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def start(self, images: int, shards: int) -> None: ...
    def shard_done(self, images: int, errors: int, skipped: bool) -> None: ...
    def stop(self) -> None: ...


class _Silent:
    def start(self, images: int, shards: int) -> None:
        pass

    def shard_done(self, images: int, errors: int, skipped: bool) -> None:
        pass

    def stop(self) -> None:
        pass


_reporter: ProgressReporter = _Silent()


def set_reporter(reporter: ProgressReporter | None) -> None:
    global _reporter
    _reporter = reporter if reporter is not None else _Silent()


def reporter() -> ProgressReporter:
    return _reporter


class RichProgress:
    """Images done, images/s and errors, updated as each shard commits."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
            TextColumn("{task.fields[rate]:.1f} img/s"), TextColumn("errors: {task.fields[errors]}"),
            TextColumn("shards: {task.fields[shards]}"), TimeElapsedColumn(), transient=False,
        )
        self._task = None
        self._errors = 0
        self._shards_done = 0
        self._shards = 0
        self._scored = 0

    def start(self, images: int, shards: int) -> None:
        self._shards = shards
        self._progress.start()
        self._task = self._progress.add_task("score", total=images, rate=0.0, errors=0, shards=f"0/{shards}")

    def shard_done(self, images: int, errors: int, skipped: bool) -> None:
        if self._task is None:
            return
        self._shards_done += 1
        self._errors += max(errors, 0)
        if not skipped:
            self._scored += images
        elapsed = self._progress.tasks[0].elapsed or 0.0
        self._progress.update(
            self._task, advance=images, errors=self._errors, shards=f"{self._shards_done}/{self._shards}",
            rate=self._scored / elapsed if elapsed > 0 else 0.0,
        )

    def stop(self) -> None:
        self._progress.stop()
