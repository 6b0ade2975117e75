"""Cross-encoder reranking (`retrieval.reranker`): a sentence-transformers ``CrossEncoder`` reads
the question and each fused candidate together and scores the pair. Slower than the searches
(one model pass per candidate) and more precise. No reranker ships with the tool: the setting is
a local folder or a hub name (downloaded once, where the machine has internet).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rag_cli.errors import ModelLoadError


class CrossEncoderReranker:
    def __init__(self, model: str, *, base_dir: Path | None = None, device: str = "cpu",
                 batch_size: int = 16) -> None:
        local = Path(model).expanduser()
        if not local.is_absolute() and base_dir is not None and (base_dir / local).exists():
            local = base_dir / local
        self.local = local.exists()
        self.model = str(local) if self.local else model
        self.device = device
        self.batch_size = batch_size
        self._encoder = None

    def warm_up(self) -> None:
        if self._encoder is not None:
            return
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from sentence_transformers import CrossEncoder

            self._encoder = CrossEncoder(self.model, device=self.device, local_files_only=self.local)
        except ImportError as exc:
            raise ModelLoadError(f"sentence-transformers is not installed ({exc})",
                                 hint="pip install sentence-transformers") from None
        except Exception as exc:
            where = "folder" if self.local else "hub model (no such local folder; downloading needs internet)"
            raise ModelLoadError(f"cannot load the reranker {self.model} ({where}): {type(exc).__name__}: {exc}",
                                 hint="set retrieval.reranker to a cross-encoder folder, or to \"\" for none") from None

    def score(self, question: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, higher is better."""
        if not texts:
            return []
        self.warm_up()
        assert self._encoder is not None
        scores = self._encoder.predict([(question, t) for t in texts], batch_size=self.batch_size,
                                       show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in scores.reshape(len(texts), -1)[:, 0]]
