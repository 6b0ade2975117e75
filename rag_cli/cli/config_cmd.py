"""`rag config`"""

from __future__ import annotations

import time

import typer

from rag_cli import observe
from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json, settings_for
from rag_cli.cli.render import render_settings


def config(ctx: typer.Context, as_json: Json = False) -> None:
    """Print the effective settings and where each value came from."""
    env = env_of(ctx)
    t0 = time.perf_counter()
    render_settings(env, settings_for(env, {}), as_json=as_json)
    observe.timings("config", {"total": time.perf_counter() - t0})


def register(app: typer.Typer) -> None:
    app.command("config")(boundary(config))
