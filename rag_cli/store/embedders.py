"""Embedders: text in, unit-length vectors out.

Construction is cheap and never imports torch; the model loads on first use
(``warm_up``), so that commands which only need to know the model's name and dimension
(the index's build check) stay fast. Once the model has been exported to ONNX (on its first
load with torch), texts are embedded with the export (`onnx_query`): `rag ask` and an
incremental `rag index` never import torch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rag_cli import crash
from rag_cli.config import EmbeddingSettings
from rag_cli.errors import ConfigError, ModelLoadError
from rag_cli.model_files import EmbeddingModelFiles, resolve_embedding_model
from rag_cli.store.onnx_query import OnnxQueryEncoder, export

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


class Embedder(Protocol):
    @property
    def name(self) -> str: ...  # recorded in the index

    @property
    def dimension(self) -> int: ...

    @property
    def loaded(self) -> bool:
        """True when ``warm_up`` has nothing (left) to load."""
        ...

    def warm_up(self) -> None:
        """Load what embeds, once (the embed calls load it themselves when it is not loaded)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder (the bundled MiniLM by default).

    With ``runtime="auto"`` on the CPU, texts are embedded by the model's ONNX export when one is
    cached (`onnx_query`; same vectors within 1e-4, and no torch import); the first load with
    torch makes that export. With ``runtime="torch"``, or another device, always torch."""

    def __init__(self, files: EmbeddingModelFiles, *, device: str = "cpu", batch_size: int = 32,
                 query_prefix: str = "", runtime: str = "auto") -> None:
        self.files = files
        self.name = files.name
        self.device = device
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.runtime = runtime if device == "cpu" else "torch"
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxQueryEncoder | None = None
        self._onnx_looked = False  # looked for a cached export once
        self.dimension = _dimension_from_files(files.path) or 0

    @property
    def loaded(self) -> bool:
        return self._model is not None or self._onnx is not None

    def warm_up(self) -> None:
        """Load what will embed: the ONNX export when there is one, else the torch model."""
        if self._model is None and self._onnx_encoder() is None:
            self.load_torch()

    def load_torch(self) -> None:
        """Load the model with sentence-transformers (and export it, once per model, with
        ``runtime="auto"``); from then on it embeds everything."""
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
            raise ModelLoadError(f"cannot load embedding model {self.files.path}: "
                                 f"{type(exc).__name__}: {exc}") from None
        model.max_seq_length = self.files.max_seq_length
        self._model = model
        if self.runtime == "auto":
            export(model, self.files, query_prefix=self.query_prefix)  # later runs never import torch
        get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(get_dimension() or self.dimension)

    def _onnx_encoder(self) -> OnnxQueryEncoder | None:
        """The ONNX export to embed with: None with ``runtime="torch"``, when none is cached, or
        once torch is loaded (a second copy of the model would only cost time)."""
        if self.runtime != "auto" or self._model is not None:
            return None
        if self._onnx is None and not self._onnx_looked:
            self._onnx_looked = True
            self._onnx = OnnxQueryEncoder.available(self.files)
        return self._onnx

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        encoder = self._onnx_encoder()
        if encoder is not None:
            try:
                return encoder.embed_many(texts, batch_size=min(self.batch_size, 16))
            except Exception as exc:  # a damaged cache file: torch still works
                log.warning("ONNX embedding failed (%s: %s); using sentence-transformers", type(exc).__name__, exc)
                self._onnx = None
        self.load_torch()
        assert self._model is not None
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return crash.in_stage(f"the embedding model {self.name}", self._encode, texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return crash.in_stage(f"the embedding model {self.name}", self._encode, [self.query_prefix + text])[0]


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


def _sentence_transformers(e: EmbeddingSettings, base_dir: Path | None, query_prefix: str) -> Embedder:
    files = resolve_embedding_model(e.model, base_dir)
    return SentenceTransformerEmbedder(files, device=e.device, batch_size=e.batch_size, query_prefix=query_prefix,
                                       runtime=e.runtime)


def _hash(e: EmbeddingSettings, base_dir: Path | None, query_prefix: str) -> Embedder:
    """The fast fake of the tests. Test support: imported here, when chosen, and never at import."""
    from rag_cli.testing.fakes import HashEmbedder

    return HashEmbedder(query_prefix=query_prefix)


# embedding.backend -> factory. The names are config.EMBEDDING_BACKENDS (tests/test_seams.py keeps them equal).
EMBEDDERS: dict[str, Callable[[EmbeddingSettings, Path | None, str], Embedder]] = {
    "sentence-transformers": _sentence_transformers,
    "hash": _hash,
}


def embedder_from_settings(e: EmbeddingSettings, *, base_dir: Path | None = None, query_prefix: str = "") -> Embedder:
    """The embedder ``e.backend`` names, built from the embedding.* settings ``e``; ``query_prefix``
    is the one in effect (``model_files.embedding_prefixes``). Cheap: the model loads on first use."""
    try:
        factory = EMBEDDERS[e.backend]
    except KeyError:
        raise ConfigError(f"unknown embedding backend {e.backend!r}",
                          hint=f"valid backends: {', '.join(EMBEDDERS)}") from None
    return factory(e, base_dir, query_prefix)
