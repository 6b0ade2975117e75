"""The file formats the tool reads: one loader per format, chosen by the file's suffix.

A new format is a loader (the ``Loader`` protocol, ingest/loaders.py) in a module of its own
under ``ingest/`` and one entry in ``LOADERS`` below (ARCHITECTURE.md, Recipes: a loader). The
walker indexes the suffixes listed here, and ``--where type=`` accepts the kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag_cli.ingest.epub import EpubLoader
from rag_cli.ingest.html import HtmlLoader
from rag_cli.ingest.loaders import JsonlLoader, Loader, MarkdownLoader, PdfLimits, PdfLoader, TextLoader
from rag_cli.ingest.word import DocxLoader

LOADERS: tuple[type[Loader], ...] = (
    MarkdownLoader, TextLoader, PdfLoader, JsonlLoader, DocxLoader, HtmlLoader, EpubLoader,
)
_BY_SUFFIX = {suffix: cls for cls in LOADERS for suffix in cls.suffixes}
SUPPORTED_SUFFIXES = tuple(_BY_SUFFIX)
KINDS = tuple(dict.fromkeys(cls.kind for cls in LOADERS))  # what the loaders write into Document.kind
_instances: dict[Any, Loader] = {}  # by class (PdfLoader: by class, limits and OCR mode)


def loader_for(path: Path, pdf_limits: PdfLimits | None = None, ocr: str = "off") -> Loader | None:
    """The loader for a file by its suffix, or None for a file type the tool does not read.
    ``pdf_limits`` and ``ocr`` (index.ocr) are the PDF loader's settings."""
    cls = _BY_SUFFIX.get(path.suffix.lower())
    if cls is None:
        return None
    if cls is PdfLoader:
        key: Any = (cls, pdf_limits or PdfLimits(), ocr)
        if key not in _instances:
            _instances[key] = PdfLoader(key[1], ocr)
        return _instances[key]
    if cls not in _instances:
        _instances[cls] = cls()
    return _instances[cls]
