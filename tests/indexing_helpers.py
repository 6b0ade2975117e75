"""Helpers for the indexing tests."""

from __future__ import annotations

from collections.abc import Callable
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
    hashes = {cid: content for cid, (content, _) in store.stored_records(ids).items()}
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


def as_nobody(run: Callable[[], dict], why: str) -> dict:
    """``run()`` (which returns JSON-able data) as is, or, as root (who reads any file), in a forked
    child that has dropped to the `nobody` user: in-process, because the interpreter may live where
    `nobody` cannot execute it (under /root). Skips the test when privileges cannot be dropped."""
    import json
    import os

    import pytest

    if os.geteuid() != 0:
        return run()
    if not hasattr(os, "fork"):
        pytest.skip(f"running as root without os.fork: cannot drop privileges {why}")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status, payload = 1, b""
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps(run()).encode()
            status = 0
        except BaseException:
            import traceback

            payload = json.dumps({"crash": traceback.format_exc()}).encode()
        finally:
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    out = json.loads(data or b"{}")
    if not out or "crash" in out and "setuid" in out["crash"]:
        pytest.skip(f"running as root and cannot drop to the nobody user {why}")
    assert "crash" not in out, out.get("crash")
    return out
