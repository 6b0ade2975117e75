"""Connecting to a Chroma server (``store.url``): the URL, the auth token, the timeouts.

chromadb's ``HttpClient`` waits forever on a server that accepts a connection and never
answers (its httpx session has no timeout); the session is given ``store.timeout`` here so
that no command can hang on a stuck server.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from rag_cli.errors import ConfigError
from rag_cli.store.chroma_api import set_session_timeout


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, ssl) of ``store.url``; a bad URL is a ConfigError that says what is wrong."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"store.url: {url!r} is not an http(s) URL", hint="e.g. store.url = \"http://127.0.0.1:8000\"")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"store.url: {url!r} has a path; give the server's root (scheme, host and port)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8000)
    except ValueError:
        raise ConfigError(f"store.url: {url!r} has a bad port") from None
    return parts.hostname, port, parts.scheme == "https"


def describe_server(store: Any) -> str:
    """How messages name the server: its URL, and the tenant and database when they are not the defaults."""
    extra = [f"{k} {v}" for k, v, d in (("tenant", store.tenant, "default_tenant"),
                                        ("database", store.database, "default_database")) if v != d]
    return store.url.rstrip("/") + (f" ({', '.join(extra)})" if extra else "") + f", collection {store.collection!r}"


def auth_headers(store: Any) -> dict[str, str]:
    token = os.environ.get(store.token_env, "") if store.token_env else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_client(store: Any) -> Any:
    """A ``chromadb.HttpClient`` for ``store`` (connects, and checks tenant and database, at once)."""
    import chromadb
    import httpx
    from chromadb.config import Settings as ChromaSettings

    host, port, ssl = parse_url(store.url)
    base = f"{'https' if ssl else 'http'}://{host}:{port}"
    # A first request with a timeout: a server that is down or stuck fails here, clearly and at once.
    response = httpx.get(f"{base}/api/v2/heartbeat", headers=auth_headers(store),
                         timeout=httpx.Timeout(store.timeout, connect=min(store.timeout, 10.0)))
    if response.status_code >= 400:
        raise ConnectionError(f"{base}/api/v2/heartbeat answered HTTP {response.status_code}")
    client = chromadb.HttpClient(host=host, port=port, ssl=ssl, headers=auth_headers(store),
                                 settings=ChromaSettings(anonymized_telemetry=False), tenant=store.tenant,
                                 database=store.database)
    set_session_timeout(client, httpx.Timeout(store.timeout, connect=min(store.timeout, 10.0)))  # see the docstring
    return client
