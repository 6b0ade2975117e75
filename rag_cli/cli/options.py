"""Options shared by several commands, and turning them into settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from rag_cli.cli.env import Env
from rag_cli.config import CHUNK_STRATEGIES, Settings, load_settings
from rag_cli.errors import ConfigError

Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]
Strategy = Annotated[str | None, typer.Option("--strategy", metavar="NAME",
                                              help=f"Chunking strategy: {', '.join(CHUNK_STRATEGIES)}.")]
Size = Annotated[int | None, typer.Option("--size", metavar="N",
                                          help="Most tokens in a chunk (embedding model tokens).")]
Overlap = Annotated[int | None, typer.Option("--overlap", metavar="N", help="Tokens shared by consecutive chunks.")]
Model = Annotated[str | None, typer.Option("--embedding-model", metavar="MODEL",
                                           help="Sentence-transformers model folder or "
                                           "hub name (default: the bundled all-MiniLM-L6-v2).")]
WatchServing = Annotated[bool, typer.Option("--watch", help="Keep the index in step with its folders while serving "
                                           "(as `rag index --watch`, with the server's warm model).")]


def settings_for(env: Env, flags: dict[str, Any]) -> Settings:
    return load_settings(Path.cwd(), config_file=env.config_file, flags=flags)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``2h``, ``1h30m``, ``45`` (seconds). ConfigError otherwise."""
    pos, total, cleaned = 0, 0.0, text.strip()
    while pos < len(cleaned):
        m = _DURATION_PART.match(cleaned, pos)
        if m is None or (m.group(2) is None and m.end() < len(cleaned)):
            raise ConfigError(f"not a duration: {text!r}", hint="for example 90s, 30m, 2h or 1h30m")
        total += float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]
        pos = m.end()
        while pos < len(cleaned) and cleaned[pos] == " ":
            pos += 1
    if not cleaned or total <= 0:
        raise ConfigError(f"not a duration: {text!r}", hint="for example 90s, 30m, 2h or 1h30m")
    return total
