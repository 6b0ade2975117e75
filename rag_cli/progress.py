"""How long-running library calls report progress: a callback object the CLI implements."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def update(self, task: str, *, advance: int = 0, total: int | None = None) -> None:
        """Move ``task`` ("files", "embed") on by ``advance``; set its ``total`` when known."""
        ...

    def note(self, text: str) -> None:
        """A line for the user now (a skipped file, a wait for the lock)."""
        ...


class NullProgress:
    def update(self, task: str, *, advance: int = 0, total: int | None = None) -> None:
        pass

    def note(self, text: str) -> None:
        pass
