"""Plain data passed between the stages: documents, chunks and reports. No I/O here."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Segment:
    """A structural block of a document: a paragraph, a heading, a code block, a table...

    ``start``/``end`` are character offsets into :attr:`Document.text`. ``kind`` tells the
    chunker how a block may be cut when it is too big: ``code`` and ``table`` blocks are
    cut between lines, prose between sentences.
    """

    start: int
    end: int
    kind: str = "paragraph"  # heading | paragraph | code | table | list | quote | html | page
    heading: tuple[str, ...] = ()  # the heading path this block sits under
    starts_section: bool = False  # a heading: the structure chunker starts a new section here


@dataclass
class Document:
    """One document's text plus what loaders know of its structure."""

    doc_id: str  # a file's path relative to the indexed root, or a JSONL record id
    source: str  # the file it came from (absolute path)
    kind: str  # markdown | text | pdf | jsonl | html | epub
    text: str
    title: str = ""
    segments: list[Segment] = field(default_factory=list)
    page_starts: list[int] = field(default_factory=list)  # offset where page i+1 starts (PDF)
    metadata: dict[str, Any] = field(default_factory=dict)
    ocr_pages: tuple[int, ...] = ()  # 1-based pages whose text OCR recognised (index.ocr)

    def ocr_between(self, first: int | None, last: int | None) -> bool:
        """Whether any page from ``first`` to ``last`` (1-based) is OCR's text."""
        if first is None or not self.ocr_pages:
            return False
        return any(first <= page <= (last or first) for page in self.ocr_pages)

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding character ``offset``, or None for documents without pages."""
        if not self.page_starts:
            return None
        lo, hi = 0, len(self.page_starts) - 1
        while lo < hi:  # last page whose start <= offset
            mid = (lo + hi + 1) // 2
            if self.page_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1


@dataclass(frozen=True)
class DocumentInfo:
    """What a filter may ask about a document: its id, its file and the file's mtime."""

    doc_id: str
    path: str
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, small enough for the embedding model."""

    doc_id: str
    source: str
    kind: str
    index: int  # position in the document, from 0
    text: str  # == document.text[start:end]
    start: int
    end: int
    tokens: int  # tokens of ``embed_text`` in the embedding model's tokenizer
    embed_text: str  # what is embedded: optional prefix, context header and the text
    heading: tuple[str, ...] = ()
    page_start: int | None = None
    page_end: int | None = None
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    ocr: bool = False  # some of its text was recognised by OCR (a scanned page)

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_id}::{self.index}"

    @cached_property
    def content_hash(self) -> str:
        """sha256 of what is embedded: equal hashes mean the stored vector is still right."""
        return hashlib.sha256(self.embed_text.encode("utf-8")).hexdigest()[:32]


class FileStatus(str, Enum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    SKIPPED = "skipped"  # nothing to index (an empty file): a warning, not a failure
    FAILED = "failed"


@dataclass(frozen=True)
class FileOutcome:
    path: str
    status: FileStatus
    documents: int = 0
    chunks: int = 0
    reason: str = ""  # why it failed or was skipped
    warnings: tuple[str, ...] = ()  # content dropped: bad JSONL records, pages that failed to extract
    notes: tuple[str, ...] = ()  # nothing lost: e.g. text that was not UTF-8


@dataclass(frozen=True)
class IndexReport:
    """What `rag index` did."""

    index_path: str
    files: tuple[FileOutcome, ...]
    chunks_written: int  # chunks embedded and stored in this run
    chunks_reused: int  # chunks whose stored embedding was still valid
    chunks_deleted: int
    chunks_total: int  # chunks in the index after the run
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    rebuilt: bool = False
    store: str = ""  # where the vectors went when the run opened the store ("in FOLDER", "on the Chroma server …")

    def count(self, status: FileStatus) -> int:
        return sum(1 for f in self.files if f.status is status)

    @property
    def problems(self) -> tuple[FileOutcome, ...]:
        """Files that failed, or lost records or pages on the way in."""
        return tuple(f for f in self.files if f.status is FileStatus.FAILED or f.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "rag-cli/index-report/v1",
            "index": self.index_path,
            "files": {s.value: self.count(s) for s in FileStatus},
            "chunks": {
                "written": self.chunks_written,
                "reused": self.chunks_reused,
                "deleted": self.chunks_deleted,
                "total": self.chunks_total,
            },
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "rebuilt": self.rebuilt,
            "store": self.store,
            "problems": [
                {"path": f.path, "status": f.status.value, "reason": f.reason, "warnings": list(f.warnings)}
                for f in self.problems
            ],
            "notes": [{"path": f.path, "notes": list(f.notes)} for f in self.files if f.notes],
            "details": [
                {k: (v.value if isinstance(v, Enum) else list(v) if isinstance(v, tuple) else v)
                 for k, v in asdict(f).items()}
                for f in self.files
            ],
        }


@dataclass(frozen=True)
class CopyReport:
    """What `rag index --to URL` did."""

    source: str  # the local index folder
    target: str  # the server collection, as messages name it
    chunks_sent: int
    chunks_skipped: int  # already on the server with the same content
    chunks_deleted: int  # on the server, no longer in the local index
    chunks_total: int
    files: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "rag-cli/copy-report/v1", "source": self.source, "target": self.target,
                "chunks": {"sent": self.chunks_sent, "skipped": self.chunks_skipped, "deleted": self.chunks_deleted,
                           "total": self.chunks_total},
                "files": self.files, "seconds": round(self.seconds, 3)}


class CheckStatus(StrEnum):
    """What a `rag doctor` check found (its JSON ``status``)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One check of `rag doctor`. ``status``: ok | warn | fail | skip; ``fix``: one line saying what
    to do (for a failure or a warning); ``exit_code``: what a failure stands for (an ExitCode)."""

    name: str
    group: str  # settings | installation | models | index
    status: CheckStatus
    detail: str
    fix: str = ""
    exit_code: int = 0
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "status": str(self.status), "detail": self.detail,
                "fix": self.fix or None, "exit_code": self.exit_code if self.status == CheckStatus.FAIL else 0,
                "seconds": round(self.seconds, 3), "data": self.data}


@dataclass(frozen=True)
class DoctorReport:
    """What `rag doctor` found. The exit code is the first failed check's (0 when none failed)."""

    checks: tuple[Check, ...]
    index_dir: str
    store: str  # "" (the embedded store in index_dir), else the server collection as messages name it
    models_loaded: bool  # False with --no-models
    seconds: float

    SCHEMA = "rag-cli/doctor/v1"

    def count(self, status: CheckStatus) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def exit_code(self) -> int:
        return next((c.exit_code for c in self.checks if c.status == CheckStatus.FAIL), 0)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "ok": self.exit_code == 0, "exit_code": self.exit_code,
                "index_dir": self.index_dir, "store": self.store or None, "models_loaded": self.models_loaded,
                "seconds": round(self.seconds, 3),
                "counts": {str(s): self.count(s) for s in CheckStatus},
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class IndexStatus:
    """What `rag status` shows: the index as its manifest (or a server's catalog) describes it."""

    index_dir: str
    store: str  # "" or the server collection ("on the Chroma server URL, collection 'chunks'")
    size_bytes: int  # the index folder on disk (with store.url: this machine's caches only)
    documents: int
    files: dict[str, int | None]  # total, ok, pending, failed, skipped (None: a server does not know)
    chunks: int
    roots: tuple[str, ...]
    updated: float | None  # the last run that changed something (None: never finished)
    dirty: bool  # a run is writing, or was interrupted
    writer_pid: int | None  # the `rag index` holding the lock
    build: dict[str, Any]  # the build record
    llm: dict[str, str]  # model, strong_model, url
    changed_settings: tuple[tuple[str, Any, Any, str], ...]  # (key, value, default, source)
    serve: dict[str, Any]  # serve.client.ServeStatus.to_dict() without its schema
    query_log: dict[str, Any] = field(default_factory=dict)  # enabled, path, size_bytes (querylog.py)

    SCHEMA = "rag-cli/status/v1"

    def to_dict(self) -> dict[str, Any]:
        b = self.build
        return {
            "schema": self.SCHEMA, "index_dir": self.index_dir, "store": self.store or None,
            "size_bytes": self.size_bytes, "documents": self.documents, "files": dict(self.files),
            "chunks": self.chunks, "roots": list(self.roots), "updated": self.updated, "dirty": self.dirty,
            "writer_pid": self.writer_pid, "schema_version": b.get("schema_version"),
            "embedding": {k.split(".", 1)[1]: v for k, v in b.items() if k.startswith("embedding.")},
            "chunking": {k.split(".", 1)[1]: v for k, v in b.items() if k.startswith("chunking.")},
            "llm": dict(self.llm),
            "changed_settings": [{"key": k, "value": v, "default": d, "source": s}
                                 for k, v, d, s in self.changed_settings],
            "serve": dict(self.serve),
            "query_log": dict(self.query_log),
        }


@dataclass(frozen=True)
class ChunkPreview:
    """What `rag chunk-preview` shows: a file's chunks under some chunker settings."""

    path: str
    strategy: str
    size: int
    overlap: int
    tokenizer: str
    documents: int
    chunks: tuple[Chunk, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "rag-cli/chunk-preview/v1",
            "path": self.path,
            "strategy": self.strategy,
            "size": self.size,
            "overlap": self.overlap,
            "tokenizer": self.tokenizer,
            "documents": self.documents,
            "chunks": [
                {
                    "index": c.index,
                    "doc_id": c.doc_id,
                    "tokens": c.tokens,
                    "start": c.start,
                    "end": c.end,
                    "page_start": c.page_start,
                    "page_end": c.page_end,
                    "ocr": c.ocr,
                    "heading": list(c.heading),
                    "text": c.text,
                }
                for c in self.chunks
            ],
        }


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as read back from the store."""

    chunk_id: str
    text: str
    metadata: dict[str, Any]
    distance: float | None = None
    vector: list[float] | None = None


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk. ``score`` is the cosine similarity of question and chunk."""

    rank: int
    chunk_id: str
    doc_id: str
    source: str
    kind: str
    text: str
    score: float
    index: int
    start: int
    end: int
    heading: str = ""
    title: str = ""
    page_start: int | None = None
    page_end: int | None = None
    ocr: bool = False  # its text was recognised by OCR

    @classmethod
    def from_stored(cls, rank: int, stored: StoredChunk) -> Hit:
        m: dict[str, Any] = stored.metadata
        return cls(rank=rank, chunk_id=stored.chunk_id, doc_id=m.get("doc_id", ""), source=m.get("source", ""),
                   kind=m.get("kind", ""), text=stored.text, score=1.0 - float(stored.distance or 0.0),
                   index=int(m.get("index", 0)), start=int(m.get("start", 0)), end=int(m.get("end", 0)),
                   heading=m.get("heading", ""), title=m.get("title", ""), page_start=m.get("page_start"),
                   page_end=m.get("page_end"), ocr=bool(m.get("ocr", False)))

    def to_dict(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "doc_id": self.doc_id, "path": self.source, "kind": self.kind,
                "page_start": self.page_start, "page_end": self.page_end, "ocr": self.ocr, "heading": self.heading,
                "score": round(self.score, 4), "text": self.text}


@dataclass(frozen=True)
class Generation:
    """What a generator returns: the text and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    model: str


@dataclass(frozen=True)
class Citation:
    """A numbered source given to the model; ``cited`` when the answer refers to it."""

    number: int
    doc_id: str
    path: str
    page_start: int | None
    page_end: int | None
    heading: str
    chunk_ids: tuple[str, ...]
    score: float
    text: str
    cited: bool = True
    ocr: bool = False  # some of its text was recognised by OCR: shown as "(OCR)" beside the page

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "doc_id": self.doc_id, "path": self.path, "page_start": self.page_start,
                "page_end": self.page_end, "ocr": self.ocr, "heading": self.heading, "chunk_id": self.chunk_ids[0],
                "chunk_ids": list(self.chunk_ids), "score": round(self.score, 4), "cited": self.cited,
                "text": self.text}


@dataclass(frozen=True)
class Evidence:
    """One sentence of an answer and the span of a chunk that supports it best.

    ``start``/``end`` are character offsets into the document's text (``Document.text``), and
    ``text`` is that text exactly; ``score`` is the share of the sentence's content words the span
    holds. ``supported`` is False when no span reaches ask.evidence_min_score: then the span fields
    are empty (``chunk_id`` "", offsets None). ``page_start``/``page_end`` are the span's page when
    its chunk lies on one page, else the chunk's pages (None for documents without pages)."""

    sentence: str
    supported: bool
    score: float
    doc_id: str = ""
    chunk_id: str = ""
    path: str = ""
    page_start: int | None = None
    page_end: int | None = None
    heading: str = ""
    start: int | None = None
    end: int | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence, "supported": self.supported, "score": round(self.score, 4),
                "doc_id": self.doc_id or None, "chunk_id": self.chunk_id or None, "path": self.path or None,
                "page_start": self.page_start, "page_end": self.page_end, "heading": self.heading,
                "start": self.start, "end": self.end, "text": self.text}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(sentence=data["sentence"], supported=bool(data["supported"]), score=float(data["score"]),
                   doc_id=data.get("doc_id") or "", chunk_id=data.get("chunk_id") or "",
                   path=data.get("path") or "", page_start=data.get("page_start"), page_end=data.get("page_end"),
                   heading=data.get("heading") or "", start=data.get("start"), end=data.get("end"),
                   text=data.get("text") or "")


class Route(StrEnum):
    """Why an answer's model was chosen (``Answer.route``; ``generate.answering.route``)."""

    FLAG = "flag"  # --model
    DEFAULT = "default"  # no llm.strong_model: llm.model
    EASY = "easy"  # a short question with a confident retrieval: llm.model
    HARD = "hard"  # anything else: llm.strong_model
    NONE = ""  # no model asked (retrieval only, or a refusal before any model)


@dataclass(frozen=True)
class Answer:
    """What `rag ask` returns. ``error`` says why there is no generated answer (the passages
    are still there); ``refused`` says the documents do not hold the answer."""

    question: str
    answer: str
    refused: bool
    # "" | "low_score" | "no_passages" | "unknown_name" | "model" | "unsupported" (ask.unsupported = "drop")
    refusal_reason: str
    citations: tuple[Citation, ...]  # the sources the model was given, cited or not
    passages: tuple[dict[str, Any], ...]  # the retrieved hits (Hit.to_dict())
    model: str | None
    route: Route  # why this model
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float]
    removed_citations: int = 0
    cached: bool = False
    error: str | None = None
    extracted: bool = False  # the answer is a sentence of the sources, not the model's text
    # The exit code ``error`` stands for: 5 (the model could not load or failed), 9 (the llm.url
    # server could not be reached or kept failing); None without an error.
    error_code: int | None = None
    # Each sentence of the answer with the span of a source that supports it (none for a refusal).
    evidence: tuple[Evidence, ...] = ()

    SCHEMA = "rag-cli/answer/v1"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.SCHEMA,
            "question": self.question,
            "answer": self.answer,
            "refused": self.refused,
            "refusal_reason": self.refusal_reason or None,
            "citations": [c.to_dict() for c in self.citations if c.cited],
            "sources": [c.to_dict() for c in self.citations],
            "passages": list(self.passages),
            "model": self.model,
            "route": str(self.route) or None,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "removed_citations": self.removed_citations,
            "cached": self.cached,
            "error": self.error,
            "error_code": self.error_code,
            "extracted": self.extracted,
            "evidence": [e.to_dict() for e in self.evidence],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        cites = tuple(Citation(number=c["number"], doc_id=c["doc_id"], path=c["path"], page_start=c["page_start"],
                               page_end=c["page_end"], heading=c["heading"], chunk_ids=tuple(c["chunk_ids"]),
                               score=c["score"], text=c["text"], cited=c["cited"], ocr=bool(c.get("ocr", False)))
                      for c in data["sources"])
        return cls(question=data["question"], answer=data["answer"], refused=data["refused"],
                   refusal_reason=data["refusal_reason"] or "", citations=cites, passages=tuple(data["passages"]),
                   model=data["model"], route=Route(data["route"] or ""), prompt_tokens=data["tokens"]["prompt"],
                   completion_tokens=data["tokens"]["completion"], timings=dict(data["timings"]),
                   removed_citations=data["removed_citations"], cached=data["cached"], error=data["error"],
                   extracted=bool(data.get("extracted", False)), error_code=data.get("error_code"),
                   evidence=tuple(Evidence.from_dict(e) for e in data.get("evidence") or ()))
