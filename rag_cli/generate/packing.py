"""Packing retrieved chunks into the prompt so that prompt plus answer always fit the model.

Neighbouring chunks of one document (overlapping or adjacent spans) are merged into one
source rather than repeated; sources are added best first while they fit, counted with the
generator's own tokenizer; the last one is cut to the room left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rag_cli.errors import InputError
from rag_cli.generate.prompts import PromptTemplates, Source, render_source
from rag_cli.models import Hit

TEMPLATE_MARGIN = 48  # chat-template tokens around the messages (role markers, BOS...)
MIN_SOURCE_TOKENS = 24  # a cut source shorter than this is left out


def merge_neighbours(hits: Sequence[Hit]) -> list[Source]:
    """Sources in the order of their best hit, with neighbouring chunks of a document merged."""
    groups: list[list[Hit]] = []
    for hit in hits:
        for group in groups:
            if group[0].doc_id == hit.doc_id and any(_touching(hit, other) for other in group):
                group.append(hit)
                break
        else:
            groups.append([hit])
    sources = []
    for number, group in enumerate(groups, start=1):
        ordered = sorted(group, key=lambda h: h.start)
        text, end = ordered[0].text, ordered[0].end
        for h in ordered[1:]:
            if h.end <= end:
                continue
            text += h.text[end - h.start:] if h.start < end else "\n" + h.text
            end = h.end
        pages = [p for h in group for p in (h.page_start, h.page_end) if p is not None]
        best = group[0]
        sources.append(Source(number=number, doc_id=best.doc_id, path=best.source, text=text,
                              score=max(h.score for h in group), chunk_ids=tuple(h.chunk_id for h in ordered),
                              page_start=min(pages) if pages else None, page_end=max(pages) if pages else None,
                              heading=best.heading, title=best.title, ocr=any(h.ocr for h in group)))
    return sources


def _touching(a: Hit, b: Hit) -> bool:
    return abs(a.index - b.index) == 1 or (a.start < b.end and b.start < a.end)


def pack(question: str, sources: Sequence[Source], templates: PromptTemplates, *, context_size: int,
         max_tokens: int, count: Callable[[str], int], style: str = "chat",
         max_sources: int = 0) -> tuple[list[dict[str, str]], list[Source]]:
    """The messages (chat, or one completion prompt) and the sources that fit in
    ``context_size`` with ``max_tokens`` left for the answer (at most ``max_sources`` of them
    when it is > 0). Never returns a prompt longer than the budget."""
    if max_sources > 0:
        sources = sources[:max_sources]
    fixed = templates.messages(question, "", style)
    budget = context_size - max_tokens - TEMPLATE_MARGIN - sum(count(m["content"]) for m in fixed)
    if budget < 0:
        raise InputError(f"the question and prompt are too long for the model's context window "
                         f"({context_size} tokens with {max_tokens} kept for the answer)",
                         hint="shorten the question, lower llm.max_tokens or raise llm.context_size")
    chosen: list[Source] = []
    blocks: list[str] = []
    used = 0
    for source in sources:
        renumbered = Source(**{**source.__dict__, "number": len(chosen) + 1})
        block = render_source(renumbered, style=style)
        cost = count(block) + 2
        if used + cost > budget:
            room = budget - used - 2
            if room >= MIN_SOURCE_TOKENS:
                cut = _cut_to(renumbered, room, count, style)
                if cut is not None:
                    chosen.append(Source(**{**renumbered.__dict__, "text": cut}))
                    blocks.append(render_source(chosen[-1], style=style))
            break
        chosen.append(renumbered)
        blocks.append(block)
        used += cost
    return templates.messages(question, "\n\n".join(blocks), style), chosen


def _cut_to(source: Source, room: int, count: Callable[[str], int], style: str = "chat") -> str | None:
    """The longest prefix of the source's text (at a word boundary) whose block fits ``room``."""
    text = source.text
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on characters; a few tokenizer calls
        mid = (lo + hi + 1) // 2
        if count(render_source(source, text[:mid] + " …", style)) <= room:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    cut = text[:lo]
    space = cut.rfind(" ")
    if space > lo // 2:
        cut = cut[:space]
    return cut.rstrip() + " …"
