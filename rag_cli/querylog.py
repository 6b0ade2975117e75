"""The query log (``ask.log = true``): one JSON line per answered question, in the index folder.

``.rag/queries.jsonl`` holds what a user asked and what came back (the question, its filters,
the retrieved chunk ids and scores, the answer and the documents it cites, refused or not, cached
or not, the latency); past ``ask.log_max_mb`` it becomes ``queries.jsonl.1`` (replacing the one
before) and a new file begins, so the log never takes more than twice the cap. It is what
`rag log stats` summarises and what `rag log export` turns into a question file to label for
`rag eval` (the format of ``../shared/eval/README.md``, read by ``evaluate/dataset.py``).

Several processes write it (`rag serve`, a `rag ask` that answered in-process, `rag chat`,
`rag mcp`): each entry is one ``write`` of a whole line to a descriptor opened ``O_APPEND``,
under an exclusive ``flock`` on ``.rag/queries.lock`` that also covers the size check and the
rotation, so lines never interleave and no entry is lost to a rename. The files get the index
folder's permissions (its mode without the execute bits: 0600 in the usual 0700 folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rag_cli.config import Settings
from rag_cli.errors import InputError, StoreError
from rag_cli.fileio import flocked
from rag_cli.models import Answer

log = logging.getLogger(__name__)

SCHEMA = "rag-cli/query/v1"
MAX_TEXT = 10_000  # characters of a question or an answer kept in one entry (a pasted book stays out)
TOP_QUESTIONS = 10


def normalise(question: str) -> str:
    """The form questions are counted and merged by: lower case, single spaces, no end punctuation."""
    return re.sub(r"\s+", " ", question).strip().rstrip("?!.;: ").lower()


def entry_for(answer: Answer, *, where: Sequence[str] = (), search_query: str | None = None,
              model_flag: str | None = None, now: float | None = None) -> dict[str, Any]:
    """The log entry of one answer (no chunk text: ids, document ids and scores only)."""
    cited: list[str] = []
    for c in answer.citations:
        if c.cited and c.doc_id not in cited:
            cited.append(c.doc_id)
    entry: dict[str, Any] = {
        "schema": SCHEMA, "ts": round(time.time() if now is None else now, 3), "pid": os.getpid(),
        "question": answer.question[:MAX_TEXT], "where": list(where),
        "retrieved": [{"chunk_id": p.get("chunk_id"), "doc_id": p.get("doc_id"), "score": p.get("score")}
                      for p in answer.passages],
        "answer": answer.answer[:MAX_TEXT], "cited": cited, "refused": answer.refused,
        "refusal_reason": answer.refusal_reason or None, "extracted": answer.extracted, "error": answer.error,
        "cached": answer.cached, "model": answer.model, "seconds": round(answer.timings.get("total", 0.0), 4),
    }
    if search_query and search_query.strip() != answer.question.strip():
        entry["search_query"] = search_query[:MAX_TEXT]  # `rag chat`'s follow-ups retrieve with more
    if model_flag:
        entry["model_flag"] = model_flag
    return entry


class QueryLog:
    """The log files of one index folder."""

    def __init__(self, index_dir: Path, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.folder = Path(index_dir)
        self.path = self.folder / "queries.jsonl"
        self.previous = self.folder / "queries.jsonl.1"
        self.lock = self.folder / "queries.lock"
        self.max_bytes = max_bytes

    @classmethod
    def of(cls, settings: Settings) -> QueryLog:
        return cls(settings.index_dir, int(settings.ask.log_max_mb * 1024 * 1024))

    def _mode(self) -> int:
        return self.folder.stat().st_mode & 0o666

    def append(self, entry: dict[str, Any]) -> None:
        """Add one entry as one line; rotate first when it would pass the cap. OSError: not written."""
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        mode = self._mode()
        with flocked(self.lock, mode=mode):
            try:
                size = os.stat(self.path, follow_symlinks=False).st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                os.replace(self.path, self.previous)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
            try:
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":  # a writer killed mid-line: end its line first
                    line = b"\n" + line
                view = memoryview(line)
                while view:  # one write for any line a pipe-sized buffer holds; under the lock either way
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)

    def entries(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every entry, oldest first (the rotated file's, then the current one's); ``since``: from that
        unix time on. A line that does not parse (a process killed mid-write) is skipped."""
        if not self.folder.is_dir():
            return []
        try:
            with flocked(self.lock, shared=True, mode=self._mode()):  # not between a rotation's two files
                texts = self._read()
        except PermissionError:  # a folder this user may read but not write: no lock, nor any writer to fear
            texts = self._read()
        out = []
        for text in texts:
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("question"), str) \
                        and (since is None or float(entry.get("ts") or 0) >= since):
                    out.append(entry)
        return out

    def _read(self) -> list[bytes]:
        texts = []
        for path in (self.previous, self.path):
            try:
                texts.append(path.read_bytes())
            except FileNotFoundError:
                continue
        return texts

    def size(self) -> int:
        """Bytes the log takes (both files)."""
        total = 0
        for path in (self.path, self.previous):
            try:
                total += os.stat(path, follow_symlinks=False).st_size
            except OSError:
                pass
        return total

    def clear(self) -> int:
        """Delete the log (both files); the bytes removed."""
        if not self.folder.is_dir():
            return 0
        try:
            with flocked(self.lock, mode=self._mode()):
                removed = self.size()
                for path in (self.path, self.previous):
                    path.unlink(missing_ok=True)
        except PermissionError as exc:
            raise StoreError(f"the query log in {self.folder} cannot be cleared ({exc.strerror})",
                             hint="run it as the user who owns the index folder") from None
        return removed


def record(settings: Settings, answer: Answer, *, where: Sequence[str] = (), search_query: str | None = None,
           model_flag: str | None = None) -> None:
    """Log ``answer`` when ``ask.log`` is on. A log that cannot be written costs a warning, never the answer."""
    if not settings.ask.log:
        return
    try:
        QueryLog.of(settings).append(entry_for(answer, where=where, search_query=search_query,
                                               model_flag=model_flag))
    except OSError as exc:
        log.warning("the query log was not written (%s)", exc)


# -- rag log stats -------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100), linear between the closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * p / 100
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass(frozen=True)
class LogStats:
    """What `rag log stats` shows: the entries of the last ``days`` days."""

    path: str
    enabled: bool
    days: float
    questions: int
    refused: int
    errors: int
    cached: int
    latency: dict[str, float | None]  # p50, p90, p99 (seconds)
    refusal_reasons: dict[str, int]
    top: tuple[tuple[str, int], ...]  # (a question as last asked, how often its normalised form was asked)
    first: float | None = None
    last: float | None = None
    size_bytes: int = 0

    SCHEMA = "rag-cli/log-stats/v1"

    @property
    def refusal_rate(self) -> float | None:
        return self.refused / self.questions if self.questions else None

    @property
    def cache_hit_share(self) -> float | None:
        return self.cached / self.questions if self.questions else None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "path": self.path, "enabled": self.enabled, "days": self.days,
                "questions": self.questions, "refused": self.refused, "refusal_rate": self.refusal_rate,
                "refusal_reasons": dict(self.refusal_reasons), "errors": self.errors, "cached": self.cached,
                "cache_hit_share": self.cache_hit_share, "latency": dict(self.latency),
                "top": [{"question": q, "count": n} for q, n in self.top], "first": self.first,
                "last": self.last, "size_bytes": self.size_bytes}


def stats(settings: Settings, *, days: float = 30.0, now: float | None = None) -> LogStats:
    """The summary of the log's last ``days`` days (the log need not be on: an old one is read)."""
    qlog = QueryLog.of(settings)
    entries = qlog.entries(since=(time.time() if now is None else now) - days * 86400)
    return summarise(entries, path=str(qlog.path), enabled=settings.ask.log, days=days, size_bytes=qlog.size())


def summarise(entries: Iterable[dict[str, Any]], *, path: str = "", enabled: bool = False, days: float = 0.0,
              size_bytes: int = 0) -> LogStats:
    """``LogStats`` of ``entries`` (as ``QueryLog.entries`` reads them)."""
    rows = list(entries)
    seconds = [float(e["seconds"]) for e in rows if isinstance(e.get("seconds"), (int, float))]
    counts: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for e in rows:
        key = normalise(e["question"])
        counts[key] += 1
        shown[key] = e["question"]  # the latest wording
    reasons = Counter(str(e.get("refusal_reason") or "?") for e in rows if e.get("refused"))
    times = [float(e["ts"]) for e in rows if isinstance(e.get("ts"), (int, float))]
    return LogStats(
        path=path, enabled=enabled, days=days, questions=len(rows), refused=sum(1 for e in rows if e.get("refused")),
        errors=sum(1 for e in rows if e.get("error")), cached=sum(1 for e in rows if e.get("cached")),
        latency={f"p{p}": percentile(seconds, p) for p in (50, 90, 99)}, refusal_reasons=dict(reasons),
        top=tuple((shown[k], n) for k, n in counts.most_common(TOP_QUESTIONS)),
        first=min(times) if times else None, last=max(times) if times else None, size_bytes=size_bytes)


# -- rag log export ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exported:
    """What `rag log export` made: question-file rows, and what it left out."""

    rows: tuple[dict[str, Any], ...]
    entries: int  # log entries read (in the time window)
    merged: int  # entries folded into an earlier row: the same question asked again
    refused_left_out: int
    errors_left_out: int  # no answer was made (the model failed)
    path: str = ""  # where the rows were written ("" = stdout)

    SCHEMA = "rag-cli/log-export/v1"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "path": self.path or None, "questions": len(self.rows),
                "entries": self.entries, "merged": self.merged, "refused_left_out": self.refused_left_out,
                "errors_left_out": self.errors_left_out}


def question_id(question: str) -> str:
    """A stable id from the normalised question: exports of the same log agree, so labels carry over."""
    return "log-" + hashlib.sha256(normalise(question).encode("utf-8")).hexdigest()[:12]


def to_questions(entries: Iterable[dict[str, Any]], *, include_refused: bool = False) -> Exported:
    """Question-file rows (``id``, ``question``, ``answers``, ``relevant``, ``answerable``, ``type``;
    what to check: ``asked``, ``last_asked``, ``where``, ``refusal_reason``) from log entries, one per
    normalised question, from its latest answer. The answer so far is the gold answer to confirm,
    the cited documents are ``relevant``, and a refusal (with ``include_refused``) is
    ``answerable: false``: each is a guess for the user to correct."""
    latest: dict[str, dict[str, Any]] = {}
    asked: Counter[str] = Counter()
    rows = list(entries)
    refused = errors = 0
    for e in rows:
        key = normalise(e["question"])
        if not key:
            continue
        asked[key] += 1
        latest[key] = e  # entries are oldest first
    out = []
    for key, e in latest.items():
        if e.get("error"):
            errors += 1
            continue
        if e.get("refused") and not include_refused:
            refused += 1
            continue
        answerable = not e.get("refused")
        row: dict[str, Any] = {
            "id": question_id(e["question"]), "question": e["question"].strip(),
            "answers": [e["answer"]] if answerable and e.get("answer") else [],
            "relevant": list(dict.fromkeys(str(d) for d in e.get("cited") or [])) if answerable else [],
            "answerable": answerable, "type": "log", "asked": asked[key],
            "last_asked": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(e.get("ts") or 0))),
        }
        if e.get("where"):
            row["where"] = e["where"]  # asked with a filter; `rag eval` runs without one
        if e.get("refused"):
            row["refusal_reason"] = e.get("refusal_reason")
        out.append(row)
    return Exported(rows=tuple(out), entries=len(rows), merged=sum(asked.values()) - len(latest),
                    refused_left_out=refused, errors_left_out=errors)


def export(settings: Settings, *, since: float | None = None, include_refused: bool = False,
           now: float | None = None) -> Exported:
    """The log's entries of the last ``since`` seconds (None: all) as question-file rows.
    InputError when nothing is left to export (an empty question file would not load)."""
    qlog = QueryLog.of(settings)
    start = None if since is None else (time.time() if now is None else now) - since
    exported = to_questions(qlog.entries(since=start), include_refused=include_refused)
    if not exported.rows:
        hint = ("set ask.log = true in .rag.toml to keep one" if not exported.entries and not settings.ask.log
                else "pass --include-refused, or a longer --since" if exported.entries else
                "ask some questions first (`rag ask`)")
        raise InputError(f"no logged questions to export from {qlog.path}"
                         + (f" ({exported.entries} entries, all left out)" if exported.entries else ""), hint=hint)
    return exported


def write_questions(exported: Exported, path: Path) -> Exported:
    """Write the rows to ``path`` as JSONL (0600: the questions are the user's)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in exported.rows)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return replace(exported, path=str(path))
