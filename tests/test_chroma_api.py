"""The parts of chromadb that rag-cli reaches past its public API (store/chroma_api.py). A
chromadb that moves them fails here, by name, instead of leaving `rag serve` and long-lived
readers on a stale index without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_cli.errors import IndexNotFound
from rag_cli.store.chroma_api import forget_cached_system, open_existing


def persistent_client(path: Path):
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def test_forget_cached_system_drops_the_client_chromadb_keeps_for_a_folder(tmp_path: Path) -> None:
    from chromadb.api.client import SharedSystemClient

    for table in ("_identifier_to_system", "_identifier_to_refcount"):
        assert isinstance(getattr(SharedSystemClient, table, None), dict), \
            f"chromadb.api.client.SharedSystemClient.{table} is gone: rework store/chroma_api.forget_cached_system"
    system = persistent_client(tmp_path)._system  # (looked up in the table by the client's folder)
    assert str(tmp_path) in SharedSystemClient._identifier_to_system, "chromadb no longer keys its cache by folder"
    assert persistent_client(tmp_path)._system is system  # one per folder for the process...
    forget_cached_system(tmp_path)
    assert str(tmp_path) not in SharedSystemClient._identifier_to_system
    assert str(tmp_path) not in SharedSystemClient._identifier_to_refcount
    assert persistent_client(tmp_path)._system is not system  # ...until it is forgotten
    forget_cached_system(tmp_path / "never-opened")  # nothing to forget: no error


def test_open_existing_never_creates_a_collection(tmp_path: Path) -> None:
    client = persistent_client(tmp_path)
    with pytest.raises(IndexNotFound, match="no collection 'chunks'"):
        open_existing(client, "chunks", f"in {tmp_path}")
    assert client.list_collections() == []
    client.create_collection("chunks")
    assert open_existing(client, "chunks", f"in {tmp_path}").name == "chunks"
