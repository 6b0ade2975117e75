"""The `rag` command: global options, and the sub-commands registered on it (each wrapped in
the error boundary, ``env.boundary``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rag_cli import __version__, crash, observe
from rag_cli.cli.env import Env

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
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Log details and per-stage timings to stderr.")] = False,
    log_format: Annotated[LogFormat, typer.Option("--log-format", envvar="RAG_LOG_FORMAT", case_sensitive=False,
                                                  show_envvar=False, help="Logs on stderr: human, or json (one object "
                                                  "a line, with the run id; the timings event ends each command; "
                                                  "also RAG_LOG_FORMAT).")] = LogFormat.human,
    config: Annotated[Path | None, typer.Option("--config", metavar="FILE",
                                                 help="Settings file to use instead of the nearest "
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


def _register() -> None:
    from rag_cli.cli import (
        ask_cmd,
        chat_cmd,
        config_cmd,
        doctor_cmd,
        eval_cmd,
        index_cmd,
        log_cmd,
        mcp_cmd,
        models_cmd,
        preview_cmd,
        serve_cmd,
        status_cmd,
    )

    for module in (index_cmd, ask_cmd, chat_cmd, eval_cmd, serve_cmd, mcp_cmd, preview_cmd, config_cmd, status_cmd,
                   doctor_cmd, log_cmd, models_cmd):
        module.register(app)


_register()


def main() -> None:
    crash.enable()  # a native crash (llama.cpp, ONNX Runtime, Chroma) prints its stage, not a bare segfault
    app(prog_name="rag")
