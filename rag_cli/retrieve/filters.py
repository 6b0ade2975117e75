"""`--where` filters, applied inside both searches (top-k stays full) rather than after them.

Syntax (repeat --where to combine; all must hold):

    path=GLOB          document id or source path matches the glob (guides/*.md, *2023*)
    type=KIND          markdown, text, pdf, jsonl, html or epub (comma-separated for several)
    page=N | N-M       chunks on page N, or overlapping pages N to M
    modified>=DATE     the file was modified on or after DATE (also >, <=, <, = for that day);
                       DATE is YYYY-MM-DD, an ISO date-time, or Nd / Nw / Nh ago (30d)
    FIELD=VALUE        a metadata field (JSONL fields, a .docx's properties; an EPUB's or page's
                       author, language, date) equals VALUE (numbers compare as numbers);
                       FIELD>=N, >, <=, < compare numbers

A filter is first *bound* to the index's document table (:meth:`Filter.bind`): path globs
and dates are properties of files, so they become a set of allowed document ids. The bound
filter gives the vector store's ``where`` clause and the same test in Python for the keyword
index.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rag_cli.errors import ConfigError
from rag_cli.ingest.formats import KINDS
from rag_cli.models import DocumentInfo

_OPS = {">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt", "=": "$eq"}
_EXPR = re.compile(r"^\s*([^<>=]+?)\s*(>=|<=|>|<|=)\s*(.*?)\s*$")
_RELATIVE = re.compile(r"^(\d+)\s*([hdw])$")


@dataclass(frozen=True)
class Filter:
    path_globs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    pages: tuple[int, int] | None = None
    modified: tuple[tuple[str, int], ...] = ()  # (operator, nanoseconds since the epoch)
    fields: tuple[tuple[str, str, Any], ...] = ()  # (field, operator, value)
    source: tuple[str, ...] = field(default=(), compare=False)  # the expressions, for messages

    @property
    def empty(self) -> bool:
        return not (self.path_globs or self.kinds or self.pages or self.modified or self.fields)

    def resolved(self) -> tuple[Any, ...]:
        """What the filter means, with relative dates already turned into instants (a cache key)."""
        return (self.path_globs, self.kinds, self.pages, self.modified, self.fields)

    def bind(self, documents: Iterable[DocumentInfo]) -> BoundFilter:
        allowed: frozenset[str] | None = None
        if self.path_globs or self.modified:
            allowed = frozenset(d.doc_id for d in documents
                                if (not self.path_globs or _path_match(d, self.path_globs))
                                and all(_compare(d.mtime_ns, op, ns) for op, ns in self.modified))
        return BoundFilter(self, allowed)


@dataclass(frozen=True)
class BoundFilter:
    filter: Filter
    allowed_docs: frozenset[str] | None  # None: documents are not restricted

    @property
    def where(self) -> dict[str, Any] | None:
        """The Chroma where clause."""
        f = self.filter
        clauses: list[dict[str, Any]] = []
        if self.allowed_docs is not None:
            clauses.append({"doc_id": {"$in": sorted(self.allowed_docs) or ["\0no match\0"]}})
        if f.kinds:
            clauses.append({"kind": {"$in": list(f.kinds)}})
        if f.pages:
            lo, hi = f.pages
            clauses.append({"page_start": {"$lte": hi}})
            clauses.append({"page_end": {"$gte": lo}})
        for key, op, value in f.fields:
            clauses.append({f"meta_{key}": {_OPS[op]: value}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def matches(self, meta: dict[str, Any]) -> bool:
        """The same test in Python, on a chunk's stored metadata."""
        f = self.filter
        if self.allowed_docs is not None and meta.get("doc_id") not in self.allowed_docs:
            return False
        if f.kinds and meta.get("kind") not in f.kinds:
            return False
        if f.pages:
            start, end = meta.get("page_start"), meta.get("page_end")
            if start is None or end is None or start > f.pages[1] or end < f.pages[0]:
                return False
        return all(_compare(meta.get(f"meta_{key}"), op, value) for key, op, value in f.fields)


def _compare(have: Any, op: str, want: Any) -> bool:
    if have is None:
        return False
    if op == "=":  # as Chroma: a boolean never equals a number
        return isinstance(have, bool) == isinstance(want, bool) and have == want
    if isinstance(have, bool) or not isinstance(have, (int, float)):
        return False  # Chroma compares only numbers with < and >
    return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want}[op]


def _path_match(doc: DocumentInfo, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(doc.doc_id, g) or (doc.path and fnmatch.fnmatch(doc.path, g))
               or (doc.path and fnmatch.fnmatch(doc.path, "*/" + g.lstrip("/"))) for g in globs)


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_date(text: str, *, now: float | None = None) -> tuple[int, int]:
    """The span [start, end) in ns that DATE covers: a whole day for YYYY-MM-DD, an instant
    for a date-time or a relative 'Nd' / 'Nw' / 'Nh' (ago). Local time. ValueError if unparsable."""
    rel = _RELATIVE.match(text.strip().lower())
    if rel:
        amount, unit = int(rel.group(1)), rel.group(2)
        seconds = amount * {"h": 3600, "d": 86400, "w": 7 * 86400}[unit]
        instant = int(((now if now is not None else time.time()) - seconds) * 1e9)
        return instant, instant
    moment = datetime.fromisoformat(text.strip())
    start = int(moment.timestamp() * 1e9)
    if len(text.strip()) == 10:  # a day
        return start, int((moment + timedelta(days=1)).timestamp() * 1e9)
    return start, start


def _date_bounds(op: str, text: str, expr: str) -> tuple[tuple[str, int], ...]:
    try:
        start, end = parse_date(text)
    except ValueError:
        raise ConfigError(f"--where {expr!r}: {text!r} is not a date",
                          hint="use YYYY-MM-DD, an ISO date-time, or 30d / 2w / 12h for that long ago") from None
    day = end > start
    if op == "=":
        if not day:
            raise ConfigError(f"--where {expr!r}: '=' needs a day (YYYY-MM-DD); use >= or <= with a time")
        return ((">=", start), ("<", end))
    if op == ">":
        return ((">=", end),) if day else ((">", start),)
    if op == "<=":
        return (("<", end),) if day else (("<=", start),)
    return ((op, start),)  # >= and <: from the start of the day or instant


def parse_where(expressions: Iterable[str]) -> Filter:
    """A Filter from ``key=value`` expressions; a malformed one is a ConfigError (exit 2)."""
    globs: list[str] = []
    kinds: list[str] = []
    pages: tuple[int, int] | None = None
    modified: list[tuple[str, int]] = []
    fields: list[tuple[str, str, Any]] = []
    exprs = tuple(expressions)
    for expr in exprs:
        match = _EXPR.match(expr)
        if not match or not match.group(3):
            raise ConfigError(f"--where {expr!r}: expected KEY=VALUE (or KEY>=VALUE, KEY<VALUE, ...)",
                              hint="e.g. --where 'path=guides/*' --where type=pdf --where page=2-4 "
                                   "--where modified>=2024-01-01")
        key, op, value = match.groups()
        if key in ("path", "type", "page") and op != "=":
            raise ConfigError(f"--where {expr!r}: {key} takes '=', not {op!r}")
        if key == "path":
            globs.append(value)
        elif key == "type":
            for kind in value.split(","):
                if kind.strip() not in KINDS:
                    raise ConfigError(f"--where {expr!r}: unknown type {kind.strip()!r}",
                                      hint=f"types: {', '.join(KINDS)}")
                kinds.append(kind.strip())
        elif key == "page":
            lo_text, _, hi_text = value.partition("-")
            try:
                lo = int(lo_text)
                hi = int(hi_text) if hi_text else lo
            except ValueError:
                raise ConfigError(f"--where {expr!r}: a page is N or N-M") from None
            if lo < 1 or hi < lo:
                raise ConfigError(f"--where {expr!r}: pages start at 1 and N-M needs N <= M")
            pages = (lo, hi)
        elif key == "modified":
            modified.extend(_date_bounds(op, value, expr))
        else:
            number = _number(value)
            if op != "=" and (isinstance(number, bool) or not isinstance(number, (int, float))):
                raise ConfigError(f"--where {expr!r}: {op} compares numbers; {value!r} is not one")
            fields.append((key, op, number))
    return Filter(tuple(globs), tuple(kinds), pages, tuple(modified), tuple(fields), exprs)
