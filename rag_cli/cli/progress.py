"""Progress bars on a terminal (stderr); silence otherwise."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rag_cli.cli.env import Env

_LABELS = {"files": "files", "embed": "chunks embedded", "questions": "questions", "copy": "chunks copied",
           "ocr": "pages OCR'd"}


class RichProgress:
    """Implements rag_cli.progress.Progress with Rich bars; notes print above the bars."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self._bars: Progress | None = None
        self._tasks: dict[str, Any] = {}
        if env.interactive_stderr:
            self._bars = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=env.err, transient=True)

    def __enter__(self) -> RichProgress:
        if self._bars:
            self._bars.start()
        return self

    def __exit__(self, *_: Any) -> None:
        if self._bars:
            self._bars.stop()

    def update(self, task: str, *, advance: int = 0, total: int | None = None) -> None:
        if not self._bars:
            return
        if task not in self._tasks:
            self._tasks[task] = self._bars.add_task(_LABELS.get(task, task), total=total)
        self._bars.update(self._tasks[task], advance=advance, total=total)

    def note(self, text: str) -> None:
        self.env.warn(text)
