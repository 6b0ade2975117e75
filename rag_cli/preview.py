"""`rag chunk-preview`: how one file would be chunked, without loading any model."""

from __future__ import annotations

import time
from pathlib import Path

from rag_cli import observe
from rag_cli.config import Settings
from rag_cli.errors import DocumentError, InputError
from rag_cli.ingest.chunkers import make_chunker
from rag_cli.ingest.formats import SUPPORTED_SUFFIXES, loader_for
from rag_cli.ingest.loaders import PdfLimits
from rag_cli.ingest.tokens import load_token_counter
from rag_cli.model_files import embedding_prefixes
from rag_cli.models import ChunkPreview


def preview_chunks(settings: Settings, path: Path, *, timings: dict[str, float] | None = None) -> ChunkPreview:
    """The chunks of ``path`` under the chunking settings; only the tokenizer is loaded.
    ``timings``, when given, receives ``load`` (the file), ``tokenizer`` and ``chunk``."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    if path.is_dir():
        raise InputError(f"{path} is a folder; chunk-preview takes one file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    loader = loader_for(path, PdfLimits.from_settings(settings.index), settings.index.ocr)
    if loader is None:
        raise InputError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}",
                         hint=f"supported: {' '.join(SUPPORTED_SUFFIXES)}")
    try:
        with observe.span("preview.load"):
            loaded = loader.load(path.resolve(), path.name)
    except DocumentError as exc:
        raise InputError(f"{path}: {exc.reason}") from None
    t1 = time.perf_counter()
    timings["load"] = t1 - t0
    c, e = settings.chunking, settings.embedding
    counter = load_token_counter(e.model, str(settings.base_dir))
    chunker = make_chunker(c.strategy, counter, size=c.size, overlap=c.overlap, min_size=c.min_size,
                           context_header=c.context_header,
                           document_prefix=embedding_prefixes(e, settings.base_dir)[1])
    t2 = time.perf_counter()
    timings["tokenizer"] = t2 - t1
    with observe.span("preview.chunk", documents=len(loaded.documents)):
        chunks = tuple(chunk for doc in loaded.documents for chunk in chunker.chunk(doc))
    timings["chunk"] = time.perf_counter() - t2
    return ChunkPreview(path=str(path), strategy=chunker.strategy, size=chunker.size, overlap=chunker.overlap,
                        tokenizer=counter.name, documents=len(loaded.documents), chunks=chunks)
