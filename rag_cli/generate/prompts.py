"""Prompts: instructions stay outside the documents; documents are delimited, numbered data.

Templates can be overridden in settings (`prompt.system`, `prompt.user`). Placeholders:
``{refusal}`` in the system prompt; ``{sources}`` and ``{question}`` in the user prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag_cli.config import DEFAULT_COMPLETION, DEFAULT_REFUSAL, DEFAULT_SYSTEM, DEFAULT_USER
from rag_cli.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """One numbered source in the prompt: one chunk, or neighbouring chunks merged."""

    number: int
    doc_id: str
    path: str
    text: str
    score: float
    chunk_ids: tuple[str, ...]
    page_start: int | None = None
    page_end: int | None = None
    heading: str = ""
    title: str = ""
    ocr: bool = False  # some of its text was recognised by OCR

    def label(self) -> str:
        parts = [self.doc_id]
        if self.page_start is not None:
            parts.append(f"page {self.page_start}" if self.page_start == self.page_end
                         else f"pages {self.page_start}-{self.page_end}")
        if self.heading:
            parts.append(self.heading)
        return ", ".join(parts)


_EMPHASIS = re.compile(r"(\*\*|__|`+)")


def plain_text(text: str) -> str:
    """Text as a base model reads it best: one line, no Markdown emphasis or code marks."""
    return " ".join(_EMPHASIS.sub("", text).split())


_SOURCE_TAG = re.compile(r"<(?=\s*/?\s*source\b)", re.IGNORECASE)


def render_source(source: Source, text: str | None = None, style: str = "chat") -> str:
    """One source block. Document text is data: anything in it that looks like a source tag
    (``</source>``, ``<SOURCE id="9">``) has its ``<`` written as ``&lt;``, and the label's
    quotes and brackets are escaped, so a document can neither close its block nor open one."""
    body = source.text if text is None else text
    if style == "completion":
        return plain_text(body)
    body = _SOURCE_TAG.sub("&lt;", body)
    label = source.label().replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<source id="{source.number}" from="{label}">\n{body}\n</source>'


@dataclass(frozen=True)
class PromptTemplates:
    system: str = DEFAULT_SYSTEM
    user: str = DEFAULT_USER
    refusal: str = DEFAULT_REFUSAL
    completion: str = DEFAULT_COMPLETION

    def __post_init__(self) -> None:
        for name, template, needed in (("prompt.system", self.system, ()),
                                       ("prompt.user", self.user, ("{sources}", "{question}")),
                                       ("prompt.completion", self.completion, ("{sources}", "{question}"))):
            missing = [p for p in needed if p not in template]
            if missing:
                raise ConfigError(f"{name} must contain {', '.join(missing)}")
            try:
                template.format(refusal="", sources="", question="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{name}: bad placeholder ({exc}); use {{refusal}}, {{sources}}, {{question}} "
                                  "and double braces for literal ones") from None

    def messages(self, question: str, sources_text: str, style: str = "chat") -> list[dict[str, str]]:
        """Chat messages; for a completion model, one message of role ``prompt``: the text to continue."""
        if style == "completion":
            return [{"role": "prompt", "content": self.completion.format(sources=sources_text,
                                                                         question=question.strip(), refusal="")}]
        return [
            {"role": "system", "content": self.system.format(refusal=self.refusal, sources="", question="")},
            {"role": "user", "content": self.user.format(sources=sources_text, question=question.strip(),
                                                         refusal=self.refusal)},
        ]
