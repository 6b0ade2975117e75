"""Configurations to compare, and indexes built for them from documents named on the command line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rag_cli.config import Settings, load_settings
from rag_cli.errors import ConfigError
from rag_cli.indexer import index_paths
from rag_cli.progress import Progress


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE", hint="e.g. --set chunking.size=300")
        values[key.strip()] = value.strip()
    return values


def configurations(cwd: Path, config_files: Sequence[Path], sets: Sequence[str],
                   base_config: Path | None = None) -> list[tuple[str, Settings]]:
    """(label, settings) for each --config file (or the usual settings), with --set applied."""
    overrides = parse_sets(sets)
    out = []
    chosen: Sequence[Path | None] = config_files or [base_config]
    for config in chosen:
        settings = load_settings(cwd, config_file=config)
        if overrides:
            settings = settings.with_values(overrides, "--set", parse_text=True)
        label = config.stem if config else ("--set " + " ".join(sets) if sets else "current settings")
        out.append((label, settings))
    return out


def with_eval_index(settings: Settings, docs: Sequence[Path], progress: Progress | None = None) -> Settings:
    """Settings whose index is a cache for ``docs``, keyed by everything that shapes an index,
    so that repeated runs (and other configurations with the same index settings) re-embed
    nothing."""
    key_material = json.dumps({"embedding": asdict(settings.embedding), "chunking": asdict(settings.chunking),
                               "docs": sorted(str(Path(d).resolve()) for d in docs)}, sort_keys=True)
    key = hashlib.sha256(key_material.encode()).hexdigest()[:16]
    folder = settings.base_dir / ".rag-eval" / key
    # Always a local index: an evaluation's documents never go into a shared server collection.
    cached = settings.with_values({"index.path": str(folder), "store.url": ""}, "eval cache")
    index_paths(cached, list(docs), progress=progress)
    return cached
