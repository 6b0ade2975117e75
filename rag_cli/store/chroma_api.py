"""What rag-cli calls of chromadb beyond one collection's own methods, in one place: opening a
collection that must exist, and the two private parts of chromadb it relies on.

The private parts are ``SharedSystemClient._identifier_to_system`` (and its refcount twin):
chromadb keeps one client per embedded folder for the life of the process, and forgetting it is
the only way to read what another process wrote; and the HttpClient's httpx session, which
chromadb leaves without a timeout. tests/test_chroma_api.py fails when chromadb moves either.
chromadb itself is imported only inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag_cli.errors import IndexNotFound


def open_existing(client: Any, name: str, where: str) -> Any:
    """A collection that must exist: IndexNotFound when it does not."""
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        raise IndexNotFound(f"no index {where} (there is no collection {name!r})",
                            hint="check store.collection (`rag config`); `rag index PATH` builds an index there, "
                                 "`rag index --to URL` copies a local one") from None


def forget_cached_system(path: Path) -> None:
    """Drop the client chromadb caches for the embedded folder ``path`` (private: its
    ``SharedSystemClient`` tables), so that the next one opened is new."""
    from chromadb.api.client import SharedSystemClient

    key = str(path)
    SharedSystemClient._identifier_to_system.pop(key, None)
    SharedSystemClient._identifier_to_refcount.pop(key, None)


def set_session_timeout(client: Any, timeout: Any) -> bool:
    """Give an ``HttpClient``'s httpx session ``timeout`` (private: ``client._server._session``);
    False when chromadb no longer has one there (the client is then used as it is)."""
    session = getattr(getattr(client, "_server", None), "_session", None)
    if session is None:
        return False
    session.timeout = timeout
    return True
