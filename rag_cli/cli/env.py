"""The terminal environment a command writes to (one object, injectable in tests), and the
error boundary every command runs in."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TextIO, TypeVar

import typer
from rich.console import Console

from rag_cli import observe
from rag_cli.errors import ExitCode, RagError
from rag_cli.observe import CLI_LOGGER, printable

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Env:
    """Where output goes. Results go to stdout; progress, warnings and errors to stderr. With
    ``log_format="json"``, what goes to stderr is log records (one JSON object per line)."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    verbose: bool = False
    config_file: Path | None = None
    log_format: str = "human"

    def __post_init__(self) -> None:
        self.out = Console(file=self.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=self.stderr, highlight=False, soft_wrap=True)

    @property
    def rich_stdout(self) -> bool:
        """Rich formatting for results only on a terminal; plain text when piped."""
        return self.out.is_terminal

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json"

    @property
    def interactive_stderr(self) -> bool:
        """Progress bars and colour on stderr: only on a terminal, and never between JSON lines."""
        return self.err.is_terminal and not self.json_logs

    def print_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """A plain line on stdout, never interpreted as markup or as terminal control codes."""
        self.stdout.write(safe(text) + "\n")

    def note(self, text: str) -> None:
        """A detail for -v only (which server answered, ...)."""
        if not self.verbose:
            return
        if self.json_logs:
            logging.getLogger(CLI_LOGGER).info("%s", text)
        else:
            self.err.print(safe(text), style="dim", markup=False, highlight=False)

    def event(self, text: str) -> None:
        """A line always shown on stderr (`rag serve` starting, ready, stopping)."""
        if self.json_logs:
            logging.getLogger(CLI_LOGGER).info("%s", text)
        else:
            self.err.print(safe(text), markup=False, highlight=False)

    def warn(self, text: str) -> None:
        if self.json_logs:  # JSON escapes control characters itself
            logging.getLogger(CLI_LOGGER).warning("%s", text)
        elif self.interactive_stderr:
            self.err.print(f"[yellow]warning:[/] {_escape(safe(text))}")
        else:
            self.stderr.write(f"warning: {safe(text)}\n")

    def error(self, text: str, hint: str | None = None) -> None:
        if self.json_logs:
            logging.getLogger(CLI_LOGGER).error("%s", text, extra={"hint": hint} if hint else None)
        elif self.interactive_stderr:
            self.err.print(f"[bold red]error:[/] {_escape(safe(text))}")
            if hint:
                self.err.print(f"[dim]hint:[/] {_escape(safe(hint))}")
        else:
            self.stderr.write(f"error: {safe(text)}\n" + (f"hint: {safe(hint)}\n" if hint else ""))
        self.stderr.flush()


def safe(text: str) -> str:
    """``text`` with every control character but newline and tab shown as ``\\xNN``
    (``observe.printable``): a document (or a model) that holds terminal escape sequences cannot
    recolour, retitle or clear the user's terminal. Rich markup needs no such care: text goes to
    Rich as ``Text``."""
    return printable(text)


def safe_tree(value: Any) -> Any:
    """``safe`` on every string of a JSON-like value (the dict form of a result)."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict):
        return {k: safe_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_tree(v) for v in value]
    return value


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def boundary(fn: Callable[P, R]) -> Callable[P, R]:
    """The one place errors are printed: a RagError becomes one line (and a hint) on stderr
    and its exit code; Ctrl-C exits 130. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        ctx = kwargs.get("ctx")  # every command takes the Typer context as `ctx`
        env = env_of(ctx) if ctx is not None else Env()
        command = (ctx.info_name if ctx is not None else None) or fn.__name__
        try:
            return fn(*args, **kwargs)
        except RagError as exc:
            env.error(exc.message, exc.hint)
            observe.failed(command, int(exc.exit_code), type(exc).__name__)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            env.error("interrupted", "what was committed is kept; run the command again to finish")
            observe.failed(command, int(ExitCode.INTERRUPTED), "KeyboardInterrupt")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


def env_of(ctx: typer.Context) -> Env:
    if not isinstance(ctx.obj, Env):
        ctx.obj = Env()
    return ctx.obj
