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


def index_state(settings: Settings, *, complete: bool = True) -> dict[str, str]:
    """{chunk id: content hash} as the vector store holds it, checked against the manifest.

    A complete run leaves no file pending and the manifest and store hold the same ids; after
    a killed run, the manifest must still know every id the store holds (so none is orphaned).
    """
    paths = IndexPaths(settings.index_dir)
    store = ChromaStore(paths.chroma)
    ids = store.all_ids()
    hashes = store.stored_hashes(ids)
    manifest = Manifest(paths.manifest)
    try:
        registered = set()
        for path, rec in manifest.files().items():
            assert rec.status in ("ok", "failed", "skipped") or not complete, f"{path} left {rec.status}"
            registered |= manifest.chunk_ids(path)
    finally:
        manifest.close()
    if complete:
        assert set(ids) == registered, "the manifest and the vector store disagree"
    else:
        assert set(ids) <= registered, f"orphan chunks: {sorted(set(ids) - registered)[:5]}"
    return hashes


def invoke(args: list[str], cwd: Path, input: str | None = None, **env: str):
    """`rag ARGS` through CliRunner in ``cwd``, with the fast hash embedder unless ``env`` says otherwise."""
    import os

    from typer.testing import CliRunner

    from rag_cli.cli.app import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, args, input=input, env={"RAG_EMBEDDING_BACKEND": "hash", **env})
    finally:
        os.chdir(old)
