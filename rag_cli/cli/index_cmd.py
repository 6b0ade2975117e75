"""`rag index PATH...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag_cli import observe
from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json, Model, Overlap, Size, Strategy, settings_for
from rag_cli.cli.progress import RichProgress
from rag_cli.cli.render import render_copy_report, render_index_report
from rag_cli.errors import ExitCode, InputError


def index(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders and files to index; none: every folder "
                                                       "indexed before.", show_default=False)] = None,
    include: Annotated[list[str] | None, typer.Option("--include", metavar="GLOB", help="Only files matching this glob "
                                                      "(repeatable; replaces index.include).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", metavar="GLOB",
                                                      help="Skip files and folders matching this glob "
                                                      "(repeatable; replaces index.exclude).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Drop the index and build it again "
                                          "(needed after changing the model or the chunking); with --to: "
                                          "replace a server collection another index folder writes.")] = False,
    to: Annotated[str | None, typer.Option("--to", metavar="URL", help="Copy this local index, vectors and all, to "
                                           "the Chroma server at URL (store.tenant, store.database, "
                                           "store.collection); nothing is embedded again.")] = None,
    wait: Annotated[float | None, typer.Option("--wait", metavar="SECONDS",
                                               help="Seconds to wait for another `rag index` on "
                                               "the same index (default: index.lock_timeout).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="After indexing, watch the folders and index what "
                                        "changes, in batches, until Ctrl-C or SIGTERM (exit 0).")] = False,
    strategy: Strategy = None,
    size: Size = None,
    overlap: Overlap = None,
    model: Model = None,
    as_json: Json = False,
) -> None:
    """Index folders of PDF, Markdown, text and JSONL files, incrementally."""
    env = env_of(ctx)
    settings = settings_for(env, {
        "index.include": include or None, "index.exclude": exclude or None, "chunking.strategy": strategy,
        "chunking.size": size, "chunking.overlap": overlap, "embedding.model": model,
    })
    from rag_cli.api import Index

    if to is not None:
        if watch:
            raise InputError("--to and --watch cannot be used together")
        if paths:
            raise InputError("--to copies the index as it is: give no PATH (run `rag index PATH` first)")
        with RichProgress(env) as progress:
            copied = Index(settings).copy_to(to, replace_other=rebuild, lock_timeout=wait, progress=progress)
        render_copy_report(env, copied, as_json=as_json)
        observe.timings("index", {"total": copied.seconds}, label="copy", chunks_sent=copied.chunks_sent)
        return
    if watch:
        from rag_cli.cli.watching import watch_index

        watch_index(env, settings, paths or [], rebuild=rebuild, lock_timeout=wait, as_json=as_json)
        return
    with RichProgress(env) as progress:
        report = Index(settings).index(paths or [], rebuild=rebuild, lock_timeout=wait, progress=progress)
    render_index_report(env, report, as_json=as_json)
    observe.timings("index", {**report.timings, "total": report.seconds}, files=len(report.files),
                    chunks_written=report.chunks_written, chunks_total=report.chunks_total)
    if report.problems:
        raise typer.Exit(int(ExitCode.PARTIAL))


def register(app: typer.Typer) -> None:
    app.command("index")(boundary(index))
