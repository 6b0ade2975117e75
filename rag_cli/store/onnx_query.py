"""Embedding without torch: the embedding model exported once to ONNX, run with onnxruntime
and the model's own Rust tokenizer.

Importing torch and sentence-transformers costs ~5 s on a small machine; embedding one question
costs ~10 ms. So the first time a sentence-transformers model loads with torch (during
`rag index`), the whole model (transformer, pooling, any dense and normalisation layers) is
exported to ONNX, checked against sentence-transformers on probe texts (cosine within
``TOLERANCE``), and kept in the user's cache. Later, `rag ask` and `rag index` embed with it
and never import torch (its throughput here matches sentence-transformers').

The cache is keyed by the model folder, its weight files' sizes and times, the sequence length
and ``FORMAT``: a changed model is exported again; a model whose export fails or disagrees is
remembered as unsupported and keeps using torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_cli.model_files import EmbeddingModelFiles, cache_root

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when the export changes
TOLERANCE = 1e-4  # largest allowed 1 - cosine(onnx, sentence-transformers) on the probe texts
PROBES = (
    "How often should I feed my starter?",
    "x",
    "Ünïcödé text – with dashes, emoji 🙂 and 日本語",
    "What was the total net sales in the quarter ended June 29, 2024, in millions of dollars?",
    "word " * 600,  # longer than any model's window: truncation must agree
)
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.onnx")


def export_path(files: EmbeddingModelFiles) -> Path:
    """The ONNX file for ``files`` in the cache (it may not exist)."""
    stamp: list[Any] = [FORMAT, str(files.path), files.max_seq_length]
    for name in _WEIGHTS:
        try:
            st = (files.path / name).stat()
        except OSError:
            continue
        stamp += [name, st.st_size, st.st_mtime_ns]
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in files.name.rsplit("/", 1)[-1])[:60]
    return cache_root() / "onnx" / f"{slug}-{key}.onnx"


def _unsupported_marker(path: Path) -> Path:
    return path.with_suffix(".unsupported")


class OnnxQueryEncoder:
    """Embeds texts with an exported model; the session loads on first use (~0.2 s here).

    Loading it on a background thread while Chroma is imported was measured and gained nothing:
    onnxruntime holds the GIL while it builds the session."""

    def __init__(self, files: EmbeddingModelFiles, path: Path) -> None:
        self.files = files
        self.path = path
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: list[str] = []

    @classmethod
    def available(cls, files: EmbeddingModelFiles) -> OnnxQueryEncoder | None:
        """An encoder when a checked export of ``files`` is in the cache and onnxruntime imports."""
        path = export_path(files)
        if not path.is_file():
            return None
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return None
        return cls(files, path)

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.files.tokenizer_file))
        tokenizer.enable_truncation(self.files.max_seq_length)
        tokenizer.no_padding()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # Idle worker threads must not spin: llama.cpp needs the cores right after the question is embedded.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = tokenizer

    def embed(self, text: str) -> list[float]:
        return self.embed_many([text])[0]

    def embed_many(self, texts: Sequence[str], batch_size: int = 16) -> list[list[float]]:
        """Unit vectors of ``texts``, in batches of similar length (padding is masked out)."""
        if self._session is None:
            self._load()
        import numpy as np

        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out: list[Any] = [None] * len(encodings)
        for start in range(0, len(order), batch_size):
            part = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in part)
            feeds = {name: np.zeros((len(part), width), dtype=np.int64) for name in self._inputs}
            for row, i in enumerate(part):
                enc, n = encodings[i], len(encodings[i].ids)
                values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
                for name in self._inputs:
                    feeds[name][row, :n] = values[name]
            vectors = self._session.run(None, feeds)[0].astype(np.float64)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, 1.0)
            for row, i in enumerate(part):
                out[i] = vectors[row].tolist()
        return out


def export(model: Any, files: EmbeddingModelFiles, *, query_prefix: str = "") -> Path | None:
    """Export ``model`` (a loaded SentenceTransformer) to the cache unless it is there or known
    not to work; check it against the model on ``PROBES``. Returns the file, or None when this
    model cannot be exported faithfully (then it stays on torch). Never raises."""
    path = export_path(files)
    marker = _unsupported_marker(path)
    if path.is_file() or marker.is_file():
        return path if path.is_file() else None
    try:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tokenize = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 6 renamed it
        features = tokenize(["a probe text"])
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]

        class Whole(torch.nn.Module):  # the model's whole pipeline: tensors in, sentence embedding out
            def __init__(self) -> None:
                super().__init__()
                self.st = model

            def forward(self, *tensors: Any) -> Any:
                return self.st(dict(zip(names, tensors)))["sentence_embedding"]

        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
        partial = path.with_suffix(f".{os.getpid()}.part")
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Whole().eval(), tuple(features[n] for n in names), str(partial), dynamo=False,
                              input_names=names, output_names=["embedding"], dynamic_axes=axes,
                              opset_version=17)
        worst = _disagreement(model, files, partial, query_prefix)
        if worst > TOLERANCE:
            partial.unlink(missing_ok=True)
            marker.write_text(f"ONNX export disagrees with sentence-transformers: 1 - cosine = {worst:.2e}\n")
            log.info("embedding stays on torch for %s: the ONNX export disagrees (%.1e)", files.name, worst)
            return None
        os.replace(partial, path)
        log.info("exported %s to %s for embedding without torch (1 - cosine <= %.1e)", files.name, path, worst)
        return path
    except Exception as exc:  # optional speed-up: a failure only means embedding stays on torch
        log.info("embedding stays on torch for %s: ONNX export failed (%s: %s)", files.name,
                 type(exc).__name__, exc)
        try:
            for stale in path.parent.glob(f"{path.stem}.*.part"):
                stale.unlink(missing_ok=True)
            if not isinstance(exc, ImportError):  # a missing `onnx` package may be installed later
                marker.write_text(f"ONNX export failed: {type(exc).__name__}: {exc}\n")
        except OSError:
            pass
        return None


def _disagreement(model: Any, files: EmbeddingModelFiles, onnx_file: Path, query_prefix: str) -> float:
    """The largest 1 - cosine between the export and the model on ``PROBES`` (with and without
    the query prefix; one at a time and in padded batches)."""
    import numpy as np

    encoder = OnnxQueryEncoder(files, onnx_file)
    texts = [query_prefix + p for p in PROBES] + list(PROBES)
    reference = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    one_by_one = [encoder.embed(t) for t in texts]
    batched = encoder.embed_many(texts, batch_size=4)  # padded batches must agree too
    return max(1.0 - float(np.dot(v, r)) for vs in (one_by_one, batched) for v, r in zip(vs, reference))
