"""`--where` filters, turned into a vector-store `where` clause so that they apply inside the
search (top-k stays full) rather than after it.

Syntax (repeat --where to combine; all must hold):

    path=GLOB        document id or source path matches the glob (guides/*.md, *2023*)
    type=KIND        markdown, text, pdf or jsonl (comma-separated for several)
    page=N | N-M     chunks on page N, or overlapping pages N to M
    FIELD=VALUE      a JSONL metadata field equals VALUE (numbers compare as numbers)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable

from rag_cli.errors import ConfigError

KINDS = ("markdown", "text", "pdf", "jsonl")


@dataclass(frozen=True)
class Filter:
    path_globs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    pages: tuple[int, int] | None = None
    fields: tuple[tuple[str, Any], ...] = ()
    source: tuple[str, ...] = field(default=(), compare=False)  # the expressions, for messages

    @property
    def empty(self) -> bool:
        return not (self.path_globs or self.kinds or self.pages or self.fields)

    def to_where(self, doc_ids: Iterable[str] | None = None) -> dict[str, Any] | None:
        """The Chroma where clause. ``doc_ids`` (all ids in the index, with their sources as
        ``id\\0source``) are needed to turn path globs into an id list."""
        clauses: list[dict[str, Any]] = []
        if self.path_globs:
            matched = sorted({d.split("\0", 1)[0] for d in (doc_ids or ()) if _path_match(d, self.path_globs)})
            clauses.append({"doc_id": {"$in": matched or ["\0no match\0"]}})
        if self.kinds:
            clauses.append({"kind": {"$in": list(self.kinds)}})
        if self.pages:
            lo, hi = self.pages
            clauses.append({"page_start": {"$lte": hi}})
            clauses.append({"page_end": {"$gte": lo}})
        for key, value in self.fields:
            clauses.append({f"meta_{key}": {"$eq": value}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


    def matches(self, meta: dict[str, Any]) -> bool:
        """The same test in Python, for the keyword index (chunk metadata as stored)."""
        if self.path_globs and not _path_match(f"{meta.get('doc_id', '')}\0{meta.get('source', '')}",
                                               self.path_globs):
            return False
        if self.kinds and meta.get("kind") not in self.kinds:
            return False
        if self.pages:
            start, end = meta.get("page_start"), meta.get("page_end")
            if start is None or end is None or start > self.pages[1] or end < self.pages[0]:
                return False
        return all(meta.get(f"meta_{key}") == value for key, value in self.fields)


def _path_match(entry: str, globs: tuple[str, ...]) -> bool:
    doc_id, _, source = entry.partition("\0")
    return any(fnmatch.fnmatch(doc_id, g) or (source and fnmatch.fnmatch(source, g))
               or (source and fnmatch.fnmatch(source, "*/" + g.lstrip("/"))) for g in globs)


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_where(expressions: Iterable[str]) -> Filter:
    """A Filter from ``key=value`` expressions; a malformed one is a ConfigError (exit 2)."""
    globs: list[str] = []
    kinds: list[str] = []
    pages: tuple[int, int] | None = None
    fields: list[tuple[str, Any]] = []
    exprs = tuple(expressions)
    for expr in exprs:
        key, sep, value = expr.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--where {expr!r}: expected KEY=VALUE",
                              hint="e.g. --where 'path=guides/*' --where type=pdf --where page=2-4")
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
        else:
            fields.append((key, _number(value)))
    return Filter(tuple(globs), tuple(kinds), pages, tuple(fields), exprs)
