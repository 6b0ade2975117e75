"""Questions embedded without torch: the ONNX export of the embedding model, checked against
sentence-transformers, used by `rag ask`, and never trusted blindly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexing_helpers import settings_in
from rag_cli.indexer import index_paths
from rag_cli.model_files import resolve_embedding_model
from rag_cli.store import onnx_query
from rag_cli.store.embedders import SentenceTransformerEmbedder
from rag_cli.store.onnx_query import OnnxQueryEncoder, export, export_path

TEXTS = [
    "How often should I feed my starter?",
    "Apple's net sales in the Greater China segment fell compared with the same quarter a year earlier.",
    "Ça coûte 12,50 € — naïve café?",
    "short",
    "a long passage " * 200,
]


@pytest.fixture(scope="module")
def files():
    return resolve_embedding_model("bundled")


@pytest.fixture(scope="module")
def exported(real_embedder, files) -> Path:
    """The bundled model exported to this test session's cache (load_torch exports it)."""
    path = export_path(files)
    assert path.is_file(), "loading the model with torch exports it for query embedding"
    return path


def test_export_agrees_with_sentence_transformers_within_1e4(real_embedder, files, exported) -> None:
    encoder = OnnxQueryEncoder(files, exported)
    reference = real_embedder._model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    one = np.array([encoder.embed(t) for t in TEXTS])
    batched = np.array(encoder.embed_many(TEXTS, batch_size=2))
    for vectors in (one, batched):
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        assert (1.0 - (vectors * reference).sum(axis=1)).max() <= 1e-4
    assert [len(v) for v in one] == [384] * len(TEXTS)


def test_embedder_without_torch_uses_the_export(real_embedder, files, exported) -> None:
    embedder = SentenceTransformerEmbedder(files)
    embedder.warm_up()  # loads the export, not torch
    vector = embedder.embed_query("How often should I feed my starter?")
    many = embedder.embed_documents(TEXTS * 20)  # an index run's batch too
    assert embedder._model is None, "no torch model was loaded"
    assert float(np.dot(vector, real_embedder.embed_query("How often should I feed my starter?"))) > 1 - 1e-4
    reference = real_embedder.embed_documents(TEXTS)
    assert min(float(np.dot(a, b)) for a, b in zip(many[:len(TEXTS)], reference)) > 1 - 1e-4


def test_without_an_export_torch_loads_and_makes_one(files, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    embedder = SentenceTransformerEmbedder(files)
    embedder.warm_up()
    assert embedder._model is not None and export_path(files).is_file()
    fresh = SentenceTransformerEmbedder(files)
    fresh.embed_query("a question")
    assert fresh._model is None


def test_runtime_torch_never_uses_the_export(real_embedder, files, exported) -> None:
    embedder = SentenceTransformerEmbedder(files, runtime="torch")
    vector = embedder.embed_query("How often should I feed my starter?")
    assert embedder._onnx is None and embedder._model is not None
    assert float(np.dot(vector, real_embedder.embed_query("How often should I feed my starter?"))) > 1 - 1e-6


def test_a_damaged_export_falls_back_to_torch(files, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    broken = export_path(files)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an onnx model")
    embedder = SentenceTransformerEmbedder(files)
    vector = embedder.embed_query("How often should I feed my starter?")
    assert len(vector) == 384 and embedder._model is not None
    assert "ONNX embedding failed" in caplog.text


def test_an_export_that_disagrees_is_refused_and_remembered(real_embedder, files, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(onnx_query, "TOLERANCE", -1.0)  # nothing can agree this well
    assert export(real_embedder._model, files) is None
    path = export_path(files)
    assert not path.exists()
    assert "disagrees" in path.with_suffix(".unsupported").read_text()
    assert not list(path.parent.glob("*.part"))
    assert OnnxQueryEncoder.available(files) is None


def test_the_cache_key_follows_the_model_files(files, tmp_path, monkeypatch) -> None:
    import dataclasses
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(files.path, copy)
    other = dataclasses.replace(files, path=copy)
    first = export_path(other)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b"\0")
    assert export_path(other) != first != export_path(files)


def test_rag_ask_never_imports_torch_once_exported(tmp_path: Path, samples: Path, real_embedder, exported) -> None:
    settings = settings_in(tmp_path)
    index_paths(settings, [samples], embedder=real_embedder)
    script = (
        "import sys, json\n"
        "from rag_cli.cli.app import main\n"
        "sys.argv = ['rag', 'ask', '--retrieve-only', '--json', 'How often should I feed my starter?']\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
    answer = json.loads(done.stdout)
    assert answer["passages"][0]["path"].endswith("starter.md")
