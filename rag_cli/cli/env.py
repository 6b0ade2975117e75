"""The terminal environment a command writes to: one object, injectable in tests."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console


@dataclass
class Env:
    """Where output goes. Results go to stdout; progress, warnings and errors to stderr."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    verbose: bool = False
    config_file: Path | None = None

    def __post_init__(self) -> None:
        self.out = Console(file=self.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=self.stderr, highlight=False, soft_wrap=True)

    @property
    def rich_stdout(self) -> bool:
        """Rich formatting for results only on a terminal; plain text when piped."""
        return self.out.is_terminal

    @property
    def interactive_stderr(self) -> bool:
        return self.err.is_terminal

    def print_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """A plain line on stdout, never interpreted as markup."""
        self.stdout.write(text + "\n")

    def warn(self, text: str) -> None:
        if self.interactive_stderr:
            self.err.print(f"[yellow]warning:[/] {_escape(text)}")
        else:
            self.stderr.write(f"warning: {text}\n")

    def error(self, text: str, hint: str | None = None) -> None:
        if self.interactive_stderr:
            self.err.print(f"[bold red]error:[/] {_escape(text)}")
            if hint:
                self.err.print(f"[dim]hint:[/] {_escape(hint)}")
        else:
            self.stderr.write(f"error: {text}\n" + (f"hint: {hint}\n" if hint else ""))
        self.stderr.flush()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
