"""The `rag` command: global options, the error boundary, and the sub-commands."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import typer

from rag_cli import __version__, crash, observe
from rag_cli.cli.env import Env
from rag_cli.errors import ExitCode, RagError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="rag",
    help="Question answering over your own documents, entirely on your machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold documents and prompts
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rag-cli {__version__}")
        raise typer.Exit()


class LogFormat(str, Enum):
    human = "human"
    json = "json"


@app.callback()
def _global(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details and per-stage timings to stderr.")] = False,
    log_format: Annotated[LogFormat, typer.Option("--log-format", envvar="RAG_LOG_FORMAT", case_sensitive=False,
                                                  show_envvar=False, help="Logs on stderr: human, or json (one object "
                                                  "a line, with the run id; the timings event ends each command; "
                                                  "also RAG_LOG_FORMAT).")] = LogFormat.human,
    config: Annotated[Path | None, typer.Option("--config", metavar="FILE", help="Settings file to use instead of the nearest "
                                                 ".rag.toml (also RAG_CONFIG).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    env = ctx.obj = Env(verbose=verbose, config_file=config, log_format=log_format.value)
    observe.configure_logging(log_format.value, verbose, env.stderr)
    ctx.call_on_close(observe.unconfigure_logging)
    if observe.tracing() and ctx.invoked_subcommand:
        # The command's root span (with the run id); ended, and the spans flushed, when it returns.
        ctx.with_resource(observe.command(ctx.invoked_subcommand))


def boundary(fn: F) -> F:
    """The one place errors are printed: a RagError becomes one line (and a hint) on stderr
    and its exit code; Ctrl-C exits 130. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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

    return wrapper  # type: ignore[return-value]


def env_of(ctx: typer.Context) -> Env:
    if not isinstance(ctx.obj, Env):
        ctx.obj = Env()
    return ctx.obj


def _register() -> None:
    from rag_cli.cli import ask_cmd, config_cmd, doctor_cmd, eval_cmd, index_cmd, preview_cmd, serve_cmd, status_cmd

    for module in (index_cmd, ask_cmd, eval_cmd, serve_cmd, preview_cmd, config_cmd, status_cmd, doctor_cmd):
        module.register(app)


_register()


def main() -> None:
    crash.enable()  # a native crash (llama.cpp, ONNX Runtime, Chroma) prints its stage, not a bare segfault
    app(prog_name="rag")
