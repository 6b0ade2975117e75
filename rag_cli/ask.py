"""`rag ask`: retrieve, pack, generate, check; degrade to passages when the model fails.

``Asker.ask`` answers from the answer cache (``store.answer_cache``) or in stages: search, gate
(refuse without a model when retrieval found nothing good enough), route (which model), context
(neighbouring chunks merged), narrow (to the sentences closest to the question), generate (load,
pack, generate) and check (``generate.answering.check_answer``, a pure function of the generated
text and the sources given).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rag_cli import observe, querylog
from rag_cli.config import Settings
from rag_cli.errors import GenerationError, InputError, ModelLoadError
from rag_cli.generate.answering import check_answer, route
from rag_cli.generate.base import Generator, generator_from_settings
from rag_cli.generate.evidence import drop_unsupported, quote
from rag_cli.generate.narrowing import best_sentence, narrow
from rag_cli.generate.packing import merge_neighbours, pack
from rag_cli.generate.prompts import PromptTemplates, Source
from rag_cli.models import Answer, Citation, Evidence, Generation, Hit, Route
from rag_cli.retrieve.filters import Filter
from rag_cli.retrieve.search import Searcher, with_neighbours
from rag_cli.store.answer_cache import AnswerCache, cache_key

log = logging.getLogger(__name__)


def _citations(sources: list[Source], cited: set[int] | frozenset[int]) -> tuple[Citation, ...]:
    return tuple(Citation(number=s.number, doc_id=s.doc_id, path=s.path, page_start=s.page_start,
                          page_end=s.page_end, heading=s.heading, chunk_ids=s.chunk_ids, score=s.score,
                          text=s.text, cited=s.number in cited, ocr=s.ocr) for s in sources)


class Asker:
    """Answers questions against one index. Models load on first use and stay loaded, so one
    Asker can answer many questions (``rag eval`` does)."""

    def __init__(self, settings: Settings, *, searcher: Searcher | None = None,
                 generators: dict[str, Generator] | None = None) -> None:
        self.settings = settings
        self.searcher = searcher or Searcher(settings)
        pr = settings.prompt
        self.templates = PromptTemplates(pr.system, pr.user, pr.refusal, pr.completion)
        self.generators: dict[str, Generator] = dict(generators or {})

    def generator(self, model: str) -> Generator:
        """The generator for a model setting: in-process llama.cpp, or the llm.url server (then
        ``model`` is only the name sent to it, and nothing is loaded here). Cheap to build."""
        if model not in self.generators:
            self.generators[model] = generator_from_settings(self.settings.llm, model, base_dir=self.settings.base_dir)
        return self.generators[model]

    def _start_loading(self, model: str) -> None:
        """Load the model beside retrieval when it can (a model that cannot load is reported
        where it is needed, as before). ``ask`` waits for the load before it returns or raises.

        llama-cpp-python would point the process's stdout and stderr at /dev/null while it loads;
        ``LlamaCppGenerator`` keeps them, so what retrieval logs meanwhile (with -v) is seen."""
        try:
            start = getattr(self.generator(model), "start_warm_up", None)
        except (ModelLoadError, GenerationError):
            return
        if start is not None:
            start()

    def preload(self, model: str | None = None) -> None:
        """Start loading ``model`` (default: llm.model) beside whatever comes next (`rag chat` does it
        before its first question); a model that cannot load is reported when it is needed."""
        self._start_loading(model or self.settings.llm.model)

    def _settle_loading(self) -> None:
        for generator in self.generators.values():
            settle = getattr(generator, "settle", None)
            if settle is not None:
                settle()

    def ask(self, question: str, *, where: Filter | None = None, model: str | None = None,
            retrieve_only: bool = False, use_cache: bool | None = None,
            on_text: Callable[[str], None] | None = None, search_query: str | None = None,
            log: bool = True) -> Answer:
        """``search_query``: what to retrieve with, when it is not the question itself (`rag chat`'s
        follow-ups: the question with what the conversation is about); the gate weighs the hits
        against it too, and the model gets ``question``.

        With ``ask.log`` on, the answer (cached or not; not a retrieve-only one) goes to the query
        log (querylog.py) here, the one place every answer passes: `rag ask` in-process, `rag chat`,
        `rag serve` and `rag mcp`. ``log=False``: `rag eval`'s questions, a test set, not queries.

        Timings: the search's (``embed``, ``retrieve`` and its parts, ``rerank``), ``narrow``,
        ``load`` (what remains of loading the model), ``generate``, ``extract``, ``total``."""
        with observe.span("ask", retrieve_only=retrieve_only, model=model) as span:
            answer = self._ask(question, where, model, retrieve_only, use_cache, on_text, search_query)
            if log and not retrieve_only:
                querylog.record(self.settings, answer, where=where.source if where else (),
                                search_query=search_query, model_flag=model)
            span.set_attributes({"rag.cached": answer.cached, "rag.refused": answer.refused,
                                 "rag.route": answer.route, "rag.answer_model": answer.model or ""})
            return answer

    def _ask(self, question: str, where: Filter | None, model: str | None, retrieve_only: bool,
             use_cache: bool | None, on_text: Callable[[str], None] | None, search_query: str | None) -> Answer:
        question = question.strip()
        if not question:
            raise InputError("the question is empty")
        query = (search_query or "").strip() or question
        started = time.perf_counter()
        s = self.settings
        use_cache = s.ask.cache if use_cache is None else use_cache
        state = self.searcher.fingerprint
        key = cache_key(s, question, where, state, model, search_query=query)
        cache = AnswerCache.in_index(self.searcher.paths.root) if use_cache and not retrieve_only else None
        try:
            if cache:
                hit = cache.get(key)
                if hit is not None:
                    return replace(hit, cached=True, timings={"total": time.perf_counter() - started})
            try:
                answer = self._answer(question, where, model, retrieve_only, on_text, started, query)
            finally:
                self._settle_loading()
            if cache and answer.error is None:
                cache.put(key, state, answer)
            return answer
        finally:
            if cache:
                cache.close()

    def _answer(self, question: str, where: Filter | None, model_flag: str | None, retrieve_only: bool,
                on_text: Callable[[str], None] | None, started: float, query: str | None = None) -> Answer:
        s = self.settings
        query = query or question
        if not retrieve_only and (model_flag or not s.llm.strong_model):
            self._start_loading(model_flag or s.llm.model)  # the model is known before retrieval
        hits, timings = self.searcher.search(query, s.retrieval.top_k, where)
        passages = tuple(h.to_dict() for h in hits)

        def done(**fields: Any) -> Answer:
            timings["total"] = time.perf_counter() - started
            base = dict(question=question, answer="", refused=False, refusal_reason="", citations=(),
                        passages=passages, model=None, route=Route.NONE, prompt_tokens=0, completion_tokens=0,
                        timings=timings)
            return Answer(**{**base, **fields})

        if retrieve_only:
            return done()
        refusal = self._gate(query, hits)
        if refusal:
            return done(answer=s.prompt.refusal, refused=True, refusal_reason=refusal)
        model, why = self._route(question, hits, model_flag)
        sources, chunks = self._context(hits)
        covered = self.searcher.keyword_index().coverer(question)

        def covers(text: str) -> float:  # the share of the question's words a sentence holds
            return covered(text) or 0.0

        sources = self._narrow(question, sources, covers, timings)
        try:
            given, gen = self._generate(question, sources, model, on_text, timings)
        except (ModelLoadError, GenerationError) as exc:
            log.info("no generated answer (%s): %s", type(exc).__name__, exc.message)
            return done(citations=_citations(sources, set()), model=model, route=why, error=exc.message,
                        error_code=int(exc.exit_code))
        checked = check_answer(gen.text, given, refusal=s.prompt.refusal, snap=s.ask.snap_to_span,
                               min_support=s.ask.min_support, extract=self._extractor(question, given, covers, timings))
        if checked.extracted:
            log.info("generated answer not supported by the sources (%r); extracted a sentence instead",
                     checked.unsupported[:80])
        text, refused, cited = checked.text, checked.refused, checked.cited
        reason = "model" if refused else ""
        evidence = () if refused else self._evidence(text, given, chunks, timings)
        if evidence and s.ask.unsupported == "drop":
            text = drop_unsupported(text, evidence)
            evidence = tuple(e for e in evidence if e.supported)
            if not text:  # no sentence of the answer is in the sources
                text, refused, reason, cited, evidence = s.prompt.refusal, True, "unsupported", frozenset(), ()
        return done(answer=text, refused=refused, refusal_reason=reason,
                    citations=_citations(given, cited), model=gen.model, route=why,
                    prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    removed_citations=checked.removed_citations, extracted=checked.extracted, evidence=evidence)

    # -- the stages -----------------------------------------------------------------------------------
    def _gate(self, question: str, hits: list[Hit]) -> str:
        """Why to refuse before any model runs ("no_passages", "unknown_name", "low_score"), or "" to go on."""
        if not hits:
            return "no_passages"
        if self.settings.retrieval.refuse_unknown_names and self.searcher.unknown_names(question):
            return "unknown_name"
        if self.searcher.evidence(question, hits[0]) < self.settings.retrieval.min_score:
            return "low_score"
        return ""

    def _route(self, question: str, hits: list[Hit], model_flag: str | None) -> tuple[str, Route]:
        """The model to answer with, and why: --model, else ``answering.route``'s choice."""
        if model_flag:
            return model_flag, Route.FLAG
        llm = self.settings.llm
        return route(question, hits[0].score, fast=llm.model, strong=llm.strong_model,
                     max_words=llm.route_max_words, min_score=llm.route_min_score)

    def _context(self, hits: list[Hit]) -> tuple[list[Source], dict[str, Hit]]:
        """The hits as numbered sources, with retrieval.neighbours chunks either side merged in, and
        the chunks they hold by id (what evidence is quoted from)."""
        neighbours = self.settings.retrieval.neighbours
        chunks = with_neighbours(self.searcher.store, hits, neighbours) if neighbours else hits
        return merge_neighbours(chunks), {c.chunk_id: c for c in chunks}

    def _evidence(self, text: str, given: list[Source], chunks: dict[str, Hit],
                  timings: dict[str, float]) -> tuple[Evidence, ...]:
        """Each sentence of the answer quoted from the chunks of the sources the model was given."""
        started = time.perf_counter()
        with observe.span("ask.evidence"):
            held = [chunks[c] for source in given for c in source.chunk_ids if c in chunks]
            unique = list({c.chunk_id: c for c in held}.values())
            evidence = quote(text, unique, min_score=self.settings.ask.evidence_min_score)
        timings["evidence"] = time.perf_counter() - started
        return evidence

    def _narrow(self, question: str, sources: list[Source], covers: Callable[[str], float],
                timings: dict[str, float]) -> list[Source]:
        """The sources cut to their retrieval.sentences sentences closest to the question (0: whole)."""
        r = self.settings.retrieval
        if r.sentences <= 0:
            return sources
        started = time.perf_counter()
        with observe.span("ask.narrow", sources=len(sources)):
            sources = narrow(question, sources, self.searcher.embedder, keep=r.sentences,
                             neighbours=r.sentence_neighbours, per_source=r.sentences_per_source, lexical=covers,
                             lexical_weight=r.sentence_coverage_weight, best_first=r.sentences_best_first)
        timings["narrow"] = time.perf_counter() - started
        return sources

    def _generate(self, question: str, sources: list[Source], model: str, on_text: Callable[[str], None] | None,
                  timings: dict[str, float]) -> tuple[list[Source], Generation]:
        """Load the model (or wait for its load), pack the prompt and generate: the sources the
        prompt holds, and what the model wrote. ModelLoadError, GenerationError: no answer."""
        s = self.settings
        generator = self.generator(model)
        started = time.perf_counter()
        with observe.span("ask.load", model=model):
            generator.warm_up()
        timings["load"] = time.perf_counter() - started
        completion = generator.style == "completion"  # known once the model is loaded
        narrowed = s.retrieval.sentences > 0
        messages, given = pack(question, sources, self.templates, context_size=generator.context_size,
                               max_tokens=s.llm.max_tokens, count=generator.count_tokens, style=generator.style,
                               max_sources=s.prompt.completion_sources if completion and not narrowed else 0)
        started = time.perf_counter()
        with observe.span("ask.generate", model=model, sources=len(given)) as generating:
            gen = generator.generate(messages, max_tokens=s.llm.max_tokens, temperature=s.llm.temperature,
                                     on_text=on_text)
            generating.set_attributes({"rag.prompt_tokens": gen.prompt_tokens,
                                       "rag.completion_tokens": gen.completion_tokens})
        timings["generate"] = time.perf_counter() - started
        return given, gen

    def _extractor(self, question: str, given: list[Source], covers: Callable[[str], float],
                   timings: dict[str, float]) -> Callable[[], tuple[int, str] | None]:
        """``check_answer``'s ``extract``: the given sources' sentence closest to the question."""

        def extract() -> tuple[int, str] | None:
            started = time.perf_counter()
            with observe.span("ask.extract"):
                best = best_sentence(question, given, self.searcher.embedder, lexical=covers,
                                     lexical_weight=self.settings.retrieval.sentence_coverage_weight)
            timings["extract"] = time.perf_counter() - started
            return best

        return extract
