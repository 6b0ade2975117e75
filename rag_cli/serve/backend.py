"""What `rag serve` keeps warm -- the embedding model, the language models, the open index -- and
how one request is answered with them.

Each request carries the client's settings. Settings that search the same index with the same
embedding model are served: a Searcher and an Asker are built for them (cached, a few at a
time) around the shared embedder and generators, through the library facade
(``api.Index(settings, serve=False, embedder=..., make_asker=...)``); anything else (another index, another
embedding model) is not, and the client works in-process. Before every request the manifest's
stamp is read (two small SQLite queries); when a `rag index` run changed it, every Searcher is
dropped and Chroma's cached client for the folder forgotten, so no answer comes from a stale
index. Only the server's one worker thread calls a Backend.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from rag_cli.api import Index
from rag_cli.ask import Asker
from rag_cli.config import Settings
from rag_cli.errors import RagError
from rag_cli.generate.base import Generator, generator_from_settings
from rag_cli.index_dir import IndexPaths
from rag_cli.index_record import StampReader
from rag_cli.model_files import gguf_location
from rag_cli.retrieve.filters import parse_where
from rag_cli.retrieve.search import Searcher

log = logging.getLogger(__name__)
MAX_VARIANTS = 4  # settings variants kept open at once (each: a Searcher with its own keyword index, an Asker)


class PooledAsker(Asker):
    """An Asker whose generators come from the server's pool (shared across settings variants)."""

    def __init__(self, settings: Settings, searcher: Searcher, pool: Callable[[Settings, str], Generator]) -> None:
        super().__init__(settings, searcher=searcher)
        self._pool = pool

    def generator(self, model: str) -> Generator:
        return self._pool(self.settings, model)


def _variant_key(settings: Settings) -> str:
    values = {key: value for key, value, _ in settings.items() if not key.startswith("serve.")}
    return json.dumps({"values": values, "base_dir": str(settings.base_dir)}, sort_keys=True, default=str)


class Backend:
    """The warm state of one server: built from the settings `rag serve` started with."""

    def __init__(self, settings: Settings, *, embedder: Any = None,
                 generators: dict[str, Generator] | None = None) -> None:
        self.settings = settings
        self.index_dir = settings.index_dir
        # Built exactly as an in-process Searcher builds its own, so vectors are the same (the
        # ONNX export once there is one: a server that only answers questions never imports torch).
        self.embedder = embedder or Index(settings, serve=False).searcher().embedder
        self._fixed = dict(generators or {})  # by model name, whatever the settings (tests)
        self._generators: dict[tuple[Any, ...], Generator] = {}
        self._locations: dict[tuple[str, str], str] = {}
        self._variants: OrderedDict[str, Index] = OrderedDict()  # each with its Searcher and PooledAsker
        self._identities: dict[str, Any] = {}
        self._stamp: tuple[Any, ...] | None = None
        self._stamps = StampReader(settings)  # a server index's catalog stays open for the checks
        self.reopened = 0
        self.llm_error: str | None = None

    # -- what it can serve -----------------------------------------------------------------------------
    def _identity(self, settings: Settings) -> Any:
        """The embedding a client's settings mean (``batch_size`` does not change a vector)."""
        e = {k: v for k, v in asdict(settings.embedding).items() if k != "batch_size"}
        key = json.dumps([e, str(settings.base_dir)], sort_keys=True)
        if key not in self._identities:
            where = e["model"]
            if settings.embedding.backend == "sentence-transformers":
                try:
                    from rag_cli.model_files import resolve_embedding_model

                    where = str(resolve_embedding_model(e["model"], settings.base_dir).path)
                except RagError as exc:
                    where = f"unresolved:{exc.message}"
            self._identities[key] = ({k: v for k, v in e.items() if k != "model"}, where)
        return self._identities[key]

    def fits(self, settings: Settings) -> str | None:
        """Why this server cannot answer for ``settings`` (None: it can)."""
        if settings.index_dir != self.index_dir:
            return f"it serves {self.index_dir}, not {settings.index_dir}"
        if self._identity(settings) != self._identity(self.settings):
            return "the embedding settings differ from the server's"
        if settings.store != self.settings.store:
            return "the store settings differ from the server's"
        return None

    # -- warm state ------------------------------------------------------------------------------------
    def load(self, *, llm: bool = True) -> None:
        """Open the index and load the models, so that the first request is as fast as the next."""
        self._check_index()
        searcher, asker = self._variant(self.settings)
        self.embedder.warm_up()
        searcher.keyword_index()
        searcher.search("warm up", 1)
        if llm:
            try:
                asker.generator(self.settings.llm.model).warm_up()
            except RagError as exc:  # retrieval is still served; `ask` reports the error per answer
                self.llm_error = exc.message
                log.warning("the language model did not load: %s", exc.message)

    def describe(self) -> dict[str, Any]:
        return {"index_dir": str(self.index_dir), "embedding_model": self.settings.embedding.model,
                "llm_models": sorted({getattr(g, "name", "?") for g in (*self._generators.values(),
                                                                         *self._fixed.values())}),
                "llm_error": self.llm_error, "settings_variants": len(self._variants),
                "index_reopened": self.reopened}

    def _check_index(self) -> None:
        stamp = self._stamps.read()
        if stamp == self._stamp:
            return
        if self._stamp is not None:
            log.info("the index changed (%s -> %s): reopening it", self._stamp[0], stamp[0])
            self.reopened += 1
        self._variants.clear()
        self._forget_chroma_client()
        self._stamp = stamp

    def _forget_chroma_client(self) -> None:
        """Chroma caches one client per folder for the life of the process. A store reopens it
        itself when the folder's write count moved (ChromaStore._fresh_client); this also covers
        an index folder deleted and built again, whose new count may match the old one."""
        from rag_cli.store.chroma import forget_client

        forget_client(IndexPaths(self.index_dir).chroma)

    def _variant(self, settings: Settings) -> tuple[Searcher, Asker]:
        key = _variant_key(settings)
        if key in self._variants:
            self._variants.move_to_end(key)
        else:
            self._variants[key] = Index(settings, serve=False, embedder=self.embedder,
                                        make_asker=lambda s, searcher: PooledAsker(s, searcher, self._generator))
            while len(self._variants) > MAX_VARIANTS:
                self._variants.popitem(last=False)
        index = self._variants[key]
        return index.searcher(), index.asker()

    def _generator(self, settings: Settings, model: str) -> Generator:
        if model in self._fixed:
            return self._fixed[model]
        llm, base = settings.llm, str(settings.base_dir)
        if llm.url:  # nothing to load here: one client per server, model name and llm.* transport settings
            key: tuple[Any, ...] = ("url", model, llm.url, llm.api_key_env, llm.context_size, llm.prompt_style,
                                    llm.connect_timeout, llm.timeout, llm.retries, llm.breaker_failures,
                                    llm.breaker_cooldown)
            if key not in self._generators:
                self._generators[key] = generator_from_settings(llm, model)
            return self._generators[key]
        if (model, base) not in self._locations:
            # Checked, cheap (Gemma is assembled by the generator's warm_up); ModelLoadError: as in-process
            self._locations[(model, base)] = gguf_location(model, settings.base_dir)
        key = (self._locations[(model, base)], llm.context_size, llm.threads, llm.prompt_style, llm.extra_buffers)
        if key not in self._generators:
            self._generators[key] = generator_from_settings(llm, model, base_dir=settings.base_dir)
        return self._generators[key]

    # -- requests --------------------------------------------------------------------------------------
    def open(self, settings: Settings) -> tuple[Searcher, Asker]:
        """The warm Searcher and Asker for ``settings``, the index reopened first when a `rag index`
        run changed it (what every request starts with; `rag mcp` reads chunks through the Searcher)."""
        self._check_index()
        return self._variant(settings)

    def _prepare(self, settings: Settings, request: dict[str, Any]) -> tuple[Searcher, Asker]:
        return self.open(settings)

    def ask(self, settings: Settings, request: dict[str, Any], on_text: Callable[[str], None] | None) -> dict[str, Any]:
        """``Asker.ask`` for the request: {"answer": Answer.to_dict()}."""
        _, asker = self._prepare(settings, request)
        where = request.get("where")
        answer = asker.ask(str(request["question"]), where=parse_where(where) if where is not None else None,
                           model=request.get("model"), retrieve_only=bool(request.get("retrieve_only")),
                           use_cache=request.get("use_cache"), on_text=on_text,
                           log=request.get("log", True) is not False)  # `rag eval` sends False
        return {"answer": answer.to_dict()}

    def search(self, settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
        """``Searcher.search`` for the request: {"hits": [every field of each Hit], "timings": ...}."""
        searcher, _ = self._prepare(settings, request)
        where = request.get("where")
        hits, timings = searcher.search(str(request["question"]), int(request["k"]),
                                        parse_where(where) if where is not None else None)
        return {"hits": [asdict(h) for h in hits], "timings": timings}

    def warm(self, settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
        """Load the models ``settings`` use (the start of a `rag eval` run)."""
        _, asker = self._prepare(settings, request)
        self.embedder.warm_up()
        if request.get("model"):
            asker.generator(str(request["model"])).warm_up()
        return {"warm": True}
