"""Progress reporting for downloads and builds (rich progress bars on a terminal)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """One progress display for a whole `parley up`."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bars = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )

    def __enter__(self) -> Progress:
        self._bars.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bars.__exit__(exc_type, exc, tb)

    def log(self, message: str) -> None:
        self._bars.console.log(message)

    def run(
        self,
        description: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        """Run a build step with a spinner; its output goes to log_path (or is kept for errors)."""
        task = self._bars.add_task(description, total=None)
        try:
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with log_path.open("ab") as out:
                    result = subprocess.run(
                        list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
                    )
                if result.returncode != 0:
                    raise RuntimeError(f"{description} failed (exit {result.returncode}); see {log_path}")
            else:
                completed = subprocess.run(
                    list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False
                )
                if completed.returncode != 0:
                    tail = (completed.stdout + completed.stderr)[-4000:]
                    raise RuntimeError(f"{description} failed (exit {completed.returncode}):\n{tail}")
        finally:
            self._bars.remove_task(task)
