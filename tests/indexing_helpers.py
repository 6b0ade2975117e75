"""Helpers for the indexing tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag_cli.config import Settings, load_settings
from rag_cli.index_dir import IndexPaths
from rag_cli.ingest.manifest import Manifest
from rag_cli.store.chroma import ChromaStore


def settings_in(workdir: Path, **flags: Any) -> Settings:
    """Settings for a run in ``workdir`` with flags given as section__key=value."""
    return load_settings(workdir, env={}, flags={k.replace("__", "."): v for k, v in flags.items()})


def index_state(settings: Settings) -> dict[str, str]:
    """{chunk id: content hash} as the vector store holds it, checked against the manifest."""
    paths = IndexPaths(settings.index_dir)
    store = ChromaStore(paths.chroma)
    ids = store.all_ids()
    hashes = store.stored_hashes(ids)
    manifest = Manifest(paths.manifest)
    try:
        registered = set()
        for path, rec in manifest.files().items():
            assert rec.status in ("ok", "failed", "skipped"), f"{path} left {rec.status}"
            registered |= manifest.chunk_ids(path)
    finally:
        manifest.close()
    assert set(ids) == registered, "the manifest and the vector store disagree"
    return hashes
