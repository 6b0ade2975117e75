"""`rag chunk-preview FILE`"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rag_cli import observe
from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json, Model, Overlap, Size, Strategy, settings_for
from rag_cli.cli.render import render_preview


def chunk_preview(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The file to chunk.", show_default=False)],
    strategy: Strategy = None,
    size: Size = None,
    overlap: Overlap = None,
    model: Model = None,
    as_json: Json = False,
) -> None:
    """Show how a file would be chunked under the current settings (no model is loaded)."""
    env = env_of(ctx)
    settings = settings_for(env, {"chunking.strategy": strategy, "chunking.size": size,
                                  "chunking.overlap": overlap, "embedding.model": model})
    from rag_cli.preview import preview_chunks

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    preview = preview_chunks(settings, file, timings=timings)
    render_preview(env, preview, as_json=as_json)
    observe.timings("chunk-preview", {**timings, "total": time.perf_counter() - t0}, chunks=len(preview.chunks))


def register(app: typer.Typer) -> None:
    app.command("chunk-preview")(boundary(chunk_preview))
