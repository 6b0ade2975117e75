"""Embedders: text in, unit-length vectors out.

Construction is cheap and never imports torch; the model loads on first use
(``warm_up``), so that commands which only need to know the model's name and dimension
(the index's build check) stay fast. Questions, and the few sentences `rag ask` ranks, are
embedded with an ONNX export of the model when one is cached (`onnx_query`), so `rag ask`
never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence, TypeVar

from rag_cli.errors import ConfigError, ModelLoadError
from rag_cli.model_files import EmbeddingModelFiles, resolve_embedding_model
from rag_cli.store.onnx_query import OnnxQueryEncoder, export

log = logging.getLogger(__name__)
T = TypeVar("T")
ONNX_MAX_TEXTS = 64  # up to this many texts embed with the ONNX export when torch is not loaded


class Embedder(Protocol):
    name: str  # recorded in the index
    dimension: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder (the bundled MiniLM by default)."""

    def __init__(self, files: EmbeddingModelFiles, *, device: str = "cpu", batch_size: int = 32,
                 query_prefix: str = "", query_runtime: str = "auto") -> None:
        self.files = files
        self.query_runtime = query_runtime
        self._query_encoder: OnnxQueryEncoder | None = None
        self._onnx_looked = False  # looked for a cached export once
        self.name = files.name
        self.device = device
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self._model = None
        self.dimension = _dimension_from_files(files.path) or 0

    def warm_up(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is local: never ask a hub
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # "Loading weights" bars would break our output

            model = SentenceTransformer(str(self.files.path), device=self.device, local_files_only=True)
        except ImportError as exc:
            raise ModelLoadError(f"sentence-transformers is not installed ({exc})",
                                 hint="pip install sentence-transformers") from None
        except Exception as exc:
            raise ModelLoadError(f"cannot load embedding model {self.files.path}: {type(exc).__name__}: {exc}") from None
        model.max_seq_length = self.files.max_seq_length
        self._model = model
        if self.query_runtime == "auto" and self.device == "cpu":
            export(model, self.files, query_prefix=self.query_prefix)  # once per model: later questions skip torch
        get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(get_dimension() or self.dimension)

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        self.warm_up()
        assert self._model is not None
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if len(texts) <= ONNX_MAX_TEXTS:  # a few sentences to rank, a small index update: no torch
            vectors = self._onnx(lambda encoder: encoder.embed_many(texts))
            if vectors is not None:
                return vectors
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        vector = self._onnx(lambda encoder: encoder.embed(self.query_prefix + text))
        return vector if vector is not None else self._encode([self.query_prefix + text])[0]

    def _onnx(self, work: Callable[[OnnxQueryEncoder], T]) -> T | None:
        """``work`` done by the ONNX export, or None when there is none, or when torch is loaded
        anyway (a second model would only cost time)."""
        if self.query_runtime != "auto" or self._model is not None:
            return None
        if self._query_encoder is None:
            if self._onnx_looked:
                return None
            self._onnx_looked = True
            self._query_encoder = OnnxQueryEncoder.available(self.files)
            if self._query_encoder is None:
                return None
        try:
            return work(self._query_encoder)
        except Exception as exc:  # a damaged cache file: torch still works
            log.warning("ONNX embedding failed (%s: %s); using sentence-transformers", type(exc).__name__, exc)
            self._query_encoder = None
            return None


def _dimension_from_files(path: Path) -> int | None:
    """The output dimension read from the model's config files, without loading it."""
    for name, key in (("1_Pooling/config.json", "word_embedding_dimension"), ("config.json", "hidden_size")):
        try:
            value = json.loads((path / name).read_text(encoding="utf-8")).get(key)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


EMBEDDERS = ("sentence-transformers", "hash")


def make_embedder(backend: str, model: str, *, base_dir: Path | None = None, device: str = "cpu",
                  batch_size: int = 32, query_prefix: str = "", query_runtime: str = "auto") -> Embedder:
    """The embedder registered under ``backend``; ``hash`` is the fast fake used by unit tests."""
    if backend == "sentence-transformers":
        files = resolve_embedding_model(model, base_dir)
        return SentenceTransformerEmbedder(files, device=device, batch_size=batch_size, query_prefix=query_prefix,
                                           query_runtime=query_runtime)
    if backend == "hash":
        from rag_cli.testing.fakes import HashEmbedder

        return HashEmbedder(query_prefix=query_prefix)
    raise ConfigError(f"unknown embedding backend {backend!r}", hint=f"valid backends: {', '.join(EMBEDDERS)}")
