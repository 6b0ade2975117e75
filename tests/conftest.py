"""Shared fixtures. Models are loaded by path from the packages that ship them: no hub."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Derived files (the ONNX export of the embedding model) go to a cache of this test session,
# never the developer's; subprocesses of the installed `rag` inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rag-tests-cache-")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SHARED_EVAL = REPO.parent / "shared" / "eval"


@pytest.fixture(autouse=True)
def _no_rag_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's RAG_* settings."""
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def real_embedder():
    """The bundled all-MiniLM-L6-v2, loaded once for the session with sentence-transformers (and
    exported to ONNX into the session's cache, as a first `rag index` does)."""
    from rag_cli.config import EmbeddingSettings
    from rag_cli.store.embedders import embedder_from_settings

    embedder = embedder_from_settings(EmbeddingSettings(model="bundled"))
    embedder.load_torch()  # type: ignore[attr-defined]
    return embedder


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A private copy of the sample documents, free to edit."""
    import shutil

    target = tmp_path / "docs"
    shutil.copytree(SAMPLES, target)
    return target
