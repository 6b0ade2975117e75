"""The catalogue of known-good GGUF language models that `rag models pull NAME` downloads.

Data only (no I/O but reading an extra catalogue file): ``model_files.gguf_location`` resolves a
catalogue name to its pulled file, ``model_pull`` downloads and checks one.

Checksums: no entry below carries a pinned sha256 (``sha256=""``). They were written on a
machine that cannot reach the hub, and a checksum nobody computed from the file is worse than
none. A pull of such an entry checks the finished file against the sha256 the hub states for it
(the ``X-Linked-Etag`` of an LFS file); an entry with ``sha256`` set is checked against that
value, and a hub that states another one is refused before anything is downloaded. Sizes and
RAM are approximate (RAM: the model plus a 2,048-token context, llama.cpp on the CPU).

``RAG_MODEL_CATALOG`` names a JSON file (a list of objects with the fields of ``CatalogModel``)
whose entries are added to the built-in ones, replacing any of the same name: a model of one's
own, a mirror, or a test's local server.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rag_cli.errors import ConfigError

CATALOG_ENV = "RAG_MODEL_CATALOG"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CatalogModel:
    """One downloadable GGUF file and what a user needs to know to pick it."""

    name: str  # what `rag models pull`, llm.model, llm.strong_model and --model accept
    repo: str  # OWNER/REPO on the hub
    file: str  # the .gguf file in the repository
    size_mb: int  # approximate download size
    ram_gb: float  # approximate memory needed to answer
    licence: str
    prompt_style: str  # llm.prompt_style that suits it ("chat": its GGUF carries a chat template)
    template: str  # the chat template the GGUF carries (what `prompt_style = "auto"` uses)
    sha256: str = ""  # pinned checksum; "": the hub's stated sha256 is checked instead
    revision: str = "main"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


BUILTIN: tuple[CatalogModel, ...] = (
    CatalogModel("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf",
                 1100, 2.0, "Apache-2.0", "chat", "ChatML"),
    CatalogModel("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct-GGUF", "qwen2.5-3b-instruct-q4_k_m.gguf",
                 2100, 3.5, "Qwen Research (non-commercial)", "chat", "ChatML"),
    CatalogModel("llama-3.2-1b-instruct", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
                 810, 1.5, "Llama 3.2 Community", "chat", "Llama 3"),
    CatalogModel("llama-3.2-3b-instruct", "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
                 2020, 3.5, "Llama 3.2 Community", "chat", "Llama 3"),
    CatalogModel("gemma-3-1b-it", "ggml-org/gemma-3-1b-it-GGUF", "gemma-3-1b-it-Q4_K_M.gguf",
                 810, 1.5, "Gemma Terms of Use", "chat", "Gemma"),
    CatalogModel("phi-3.5-mini-instruct", "bartowski/Phi-3.5-mini-instruct-GGUF", "Phi-3.5-mini-instruct-Q4_K_M.gguf",
                 2390, 4.0, "MIT", "chat", "Phi-3"),
)


def _entry(raw: object, source: str) -> CatalogModel:
    known = {f.name for f in fields(CatalogModel)}
    if not isinstance(raw, dict) or not {"name", "repo", "file"} <= raw.keys() or not raw.keys() <= known:
        raise ConfigError(f"{source}: each entry needs name, repo and file, and only the fields "
                          f"{', '.join(sorted(known))}", hint=f"fix {source}, or unset {CATALOG_ENV}")
    values = {"size_mb": 0, "ram_gb": 0.0, "licence": "?", "prompt_style": "chat", "template": "?", **raw}
    try:
        entry = CatalogModel(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}", hint=f"fix {source}, or unset {CATALOG_ENV}") from None
    if not _NAME.match(entry.name) or entry.repo.count("/") != 1 or not entry.file.endswith(".gguf") \
            or "/" in entry.file or ".." in entry.file or (entry.sha256 and not _SHA256.match(entry.sha256)):
        raise ConfigError(f"{source}: entry {entry.name!r}: a lower-case name, repo OWNER/REPO, a .gguf file "
                          "name and (optionally) a lower-case hex sha256 are needed",
                          hint=f"fix {source}, or unset {CATALOG_ENV}")
    return entry


def catalog() -> tuple[CatalogModel, ...]:
    """The built-in entries, with those of the ``RAG_MODEL_CATALOG`` file added (same name: replaced)."""
    extra_file = os.environ.get(CATALOG_ENV)
    if not extra_file:
        return BUILTIN
    try:
        raw = json.loads(Path(extra_file).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model catalogue {extra_file} ({CATALOG_ENV}): {exc}",
                          hint=f"fix the file, or unset {CATALOG_ENV}") from None
    if not isinstance(raw, list):
        raise ConfigError(f"{extra_file} ({CATALOG_ENV}) must hold a JSON list of models",
                          hint=f"fix the file, or unset {CATALOG_ENV}")
    extra = {e.name: e for e in (_entry(r, extra_file) for r in raw)}
    return tuple(e for e in BUILTIN if e.name not in extra) + tuple(extra.values())


def find(name: str) -> CatalogModel | None:
    """The catalogue entry of that name, or None."""
    return next((e for e in catalog() if e.name == name), None)
