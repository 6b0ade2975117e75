"""Options shared by several commands, and turning them into settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rag_cli.cli.env import Env
from rag_cli.config import CHUNK_STRATEGIES, Settings, load_settings

Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]
Strategy = Annotated[str | None, typer.Option("--strategy", metavar="NAME",
                                              help=f"Chunking strategy: {', '.join(CHUNK_STRATEGIES)}.")]
Size = Annotated[int | None, typer.Option("--size", metavar="N",
                                          help="Most tokens in a chunk (embedding model tokens).")]
Overlap = Annotated[int | None, typer.Option("--overlap", metavar="N", help="Tokens shared by consecutive chunks.")]
Model = Annotated[str | None, typer.Option("--embedding-model", metavar="MODEL",
                                           help="Sentence-transformers model folder or "
                                           "hub name (default: the bundled all-MiniLM-L6-v2).")]


def settings_for(env: Env, flags: dict[str, Any]) -> Settings:
    return load_settings(Path.cwd(), config_file=env.config_file, flags=flags)
