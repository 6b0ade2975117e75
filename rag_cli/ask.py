"""`rag ask`: retrieve, pack, generate, check; degrade to passages when the model fails."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from rag_cli import observe
from rag_cli.config import Settings
from rag_cli.errors import InputError, ModelLoadError, GenerationError
from rag_cli.generate.answering import (clean_citations, is_refusal, route, snap_to_span, support, tidy,
                                       verify_citations)
from rag_cli.generate.base import Generator, generator_from_settings
from rag_cli.generate.narrowing import best_sentence, narrow
from rag_cli.generate.packing import merge_neighbours, pack
from rag_cli.generate.prompts import PromptTemplates, plain_text
from rag_cli.models import Answer, Citation, Route
from rag_cli.retrieve.filters import Filter
from rag_cli.retrieve.search import Searcher, with_neighbours

ANSWER_CACHE = "answers.sqlite3"

log = logging.getLogger(__name__)


class AnswerCache:
    """Answers by a key of the question, the answer-affecting settings and the index state."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), timeout=10, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, index_state TEXT NOT NULL, "
                         "answer TEXT NOT NULL, created REAL NOT NULL)")

    def get(self, key: str) -> Answer | None:
        row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return Answer.from_dict(json.loads(row[0])) if row else None

    def put(self, key: str, index_state: str, answer: Answer) -> None:
        self._db.execute("DELETE FROM answers WHERE index_state != ?", (index_state,))  # stale: index changed
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                         (key, index_state, json.dumps(answer.to_dict()), time.time()))

    def close(self) -> None:
        self._db.close()


# Bumped when the way answers are made changes (a cached answer of an older rag-cli is not reused):
# 2 = "bundled" became Gemma 3 270M, with narrowing, snapping and the evidence refusal.
ANSWER_LOGIC = 2


# How llm.url is reached, not what it answers: changing these keeps the cached answers.
TRANSPORT_KEYS = frozenset({"api_key_env", "connect_timeout", "timeout", "retries", "breaker_failures",
                            "breaker_cooldown"})


def cache_key(settings: Settings, question: str, where: Filter | None, index_state: str) -> str:
    llm = {k: v for k, v in asdict(settings.llm).items() if k not in TRANSPORT_KEYS}
    material = {
        "question": question.strip(), "where": repr(where.resolved()) if where else "", "index": index_state,
        "retrieval": asdict(settings.retrieval), "llm": llm, "prompt": asdict(settings.prompt),
        "embedding": asdict(settings.embedding), "logic": ANSWER_LOGIC,
        "ask": {k: v for k, v in asdict(settings.ask).items() if k != "cache"},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _citations(sources, cited: set[int]) -> tuple[Citation, ...]:
    return tuple(Citation(number=s.number, doc_id=s.doc_id, path=s.path, page_start=s.page_start,
                          page_end=s.page_end, heading=s.heading, chunk_ids=s.chunk_ids, score=s.score,
                          text=s.text, cited=s.number in cited) for s in sources)


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
        where it is needed, as before).

        ``ask`` waits for the load before it returns or raises. llama-cpp-python would point the
        process's stdout and stderr at /dev/null while it loads; ``LlamaCppGenerator`` keeps them,
        so what retrieval logs meanwhile (with -v) is seen."""
        try:
            start = getattr(self.generator(model), "start_warm_up", None)
        except (ModelLoadError, GenerationError):
            return
        if start is not None:
            start()

    def _settle_loading(self) -> None:
        for generator in self.generators.values():
            settle = getattr(generator, "settle", None)
            if settle is not None:
                settle()

    def ask(self, question: str, *, where: Filter | None = None, model: str | None = None,
            retrieve_only: bool = False, use_cache: bool | None = None,
            on_text: Callable[[str], None] | None = None) -> Answer:
        """Timings: the search's (``embed``, ``retrieve`` and its parts, ``rerank``), ``narrow``,
        ``load`` (what remains of loading the model), ``generate``, ``extract``, ``total``."""
        with observe.span("ask", retrieve_only=retrieve_only, model=model) as span:
            answer = self._ask(question, where, model, retrieve_only, use_cache, on_text)
            span.set_attributes({"rag.cached": answer.cached, "rag.refused": answer.refused,
                                 "rag.route": answer.route, "rag.answer_model": answer.model or ""})
            return answer

    def _ask(self, question: str, where: Filter | None, model: str | None, retrieve_only: bool,
             use_cache: bool | None, on_text: Callable[[str], None] | None) -> Answer:
        question = question.strip()
        if not question:
            raise InputError("the question is empty")
        started = time.perf_counter()
        s = self.settings
        use_cache = s.ask.cache if use_cache is None else use_cache
        state = self.searcher.fingerprint
        key = cache_key(s, question, where, state) + (model or "")
        cache = AnswerCache(self.searcher.paths.root / ANSWER_CACHE) if use_cache and not retrieve_only else None
        try:
            if cache:
                hit = cache.get(key)
                if hit is not None:
                    return replace(hit, cached=True, timings={"total": time.perf_counter() - started})
            try:
                answer = self._answer(question, where, model, retrieve_only, on_text, started)
            finally:
                self._settle_loading()
            if cache and answer.error is None:
                cache.put(key, state, answer)
            return answer
        finally:
            if cache:
                cache.close()

    def _answer(self, question: str, where: Filter | None, model_flag: str | None, retrieve_only: bool,
                on_text: Callable[[str], None] | None, started: float) -> Answer:
        s = self.settings
        if not retrieve_only and (model_flag or not s.llm.strong_model):
            self._start_loading(model_flag or s.llm.model)  # the model is known before retrieval
        hits, timings = self.searcher.search(question, s.retrieval.top_k, where)
        passages = tuple(h.to_dict() for h in hits)

        def done(**fields) -> Answer:
            timings["total"] = time.perf_counter() - started
            base = dict(question=question, answer="", refused=False, refusal_reason="", citations=(),
                        passages=passages, model=None, route=Route.NONE, prompt_tokens=0, completion_tokens=0,
                        timings=timings)
            return Answer(**{**base, **fields})

        if retrieve_only:
            return done()
        if not hits:
            return done(answer=s.prompt.refusal, refused=True, refusal_reason="no_passages")
        if self.searcher.evidence(question, hits[0]) < s.retrieval.min_score:
            return done(answer=s.prompt.refusal, refused=True, refusal_reason="low_score")

        if model_flag:
            chosen, why = model_flag, Route.FLAG
        else:
            chosen, why = route(question, hits[0].score, fast=s.llm.model, strong=s.llm.strong_model,
                                max_words=s.llm.route_max_words, min_score=s.llm.route_min_score)
        context = hits
        if s.retrieval.neighbours:
            context = with_neighbours(self.searcher.store, hits, s.retrieval.neighbours)
        sources = merge_neighbours(context)
        covered = self.searcher.keyword_index().coverer(question)

        def covers(text: str) -> float:  # the share of the question's words a sentence holds
            return covered(text) or 0.0

        narrowed = s.retrieval.sentences > 0
        if narrowed:
            t_n = time.perf_counter()
            with observe.span("ask.narrow", sources=len(sources)):
                sources = narrow(question, sources, self.searcher.embedder, keep=s.retrieval.sentences,
                                 neighbours=s.retrieval.sentence_neighbours,
                                 per_source=s.retrieval.sentences_per_source, lexical=covers,
                                 lexical_weight=s.retrieval.sentence_coverage_weight,
                                 best_first=s.retrieval.sentences_best_first)
            timings["narrow"] = time.perf_counter() - t_n
        try:
            generator = self.generator(chosen)
            t0 = time.perf_counter()
            with observe.span("ask.load", model=chosen):
                generator.warm_up()
            timings["load"] = time.perf_counter() - t0
            completion = generator.style == "completion"  # known once the model is loaded
            messages, given = pack(question, sources, self.templates, context_size=generator.context_size,
                                   max_tokens=s.llm.max_tokens, count=generator.count_tokens, style=generator.style,
                                   max_sources=s.prompt.completion_sources if completion and not narrowed else 0)
            t1 = time.perf_counter()
            with observe.span("ask.generate", model=chosen, sources=len(given)) as generating:
                gen = generator.generate(messages, max_tokens=s.llm.max_tokens, temperature=s.llm.temperature,
                                         on_text=on_text)
                generating.set_attributes({"rag.prompt_tokens": gen.prompt_tokens,
                                           "rag.completion_tokens": gen.completion_tokens})
            timings["generate"] = time.perf_counter() - t1
        except (ModelLoadError, GenerationError) as exc:
            log.info("no generated answer (%s): %s", type(exc).__name__, exc.message)
            return done(citations=_citations(sources, set()), model=chosen, route=why, error=exc.message,
                        error_code=int(exc.exit_code))

        if is_refusal(gen.text, s.prompt.refusal):
            return done(answer=s.prompt.refusal, refused=True, refusal_reason="model",
                        citations=_citations(given, set()), model=gen.model, route=why,
                        prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens)
        text, cited, removed = clean_citations(tidy(gen.text), len(given))
        texts = [g.text for g in given]
        if s.ask.snap_to_span:
            generated = text
            span = snap_to_span(text, texts)
            if span is not None:  # the sources' own words for a short answer, cited where they stand
                text, cited = plain_text(span[1]), {given[span[0]].number}
                if generated[:1].isupper():  # "Feed your starter …" stays capitalised
                    text = text[:1].upper() + text[1:]
        shares = support(text, texts)
        extracted = False
        if s.ask.min_support and max(shares, default=0.0) < s.ask.min_support:
            # Not grounded in the sources (a small model can drift into anything): answer with
            # the sources' own sentence closest to the question instead, and say so.
            t_x = time.perf_counter()
            with observe.span("ask.extract"):
                best = best_sentence(question, given, self.searcher.embedder, lexical=covers,
                                     lexical_weight=s.retrieval.sentence_coverage_weight)
            timings["extract"] = time.perf_counter() - t_x
            if best is not None:
                number, sentence = best
                log.info("generated answer not supported by the sources (%r); extracted a sentence instead",
                         text[:80])
                text, cited, extracted = sentence, {number}, True
        # Small models forget to cite, or cite the wrong number: credit the sources that hold the answer.
        if not extracted:
            # An answer trusted on ask.min_support is credited to the source that supports it most.
            cited = verify_citations(text, texts, cited, shares=shares, min_support=s.ask.min_support or 0.5)
        return done(answer=text, citations=_citations(given, cited), model=gen.model, route=why,
                    prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    removed_citations=removed, extracted=extracted)


def ask(settings: Settings, question: str, **options) -> Answer:
    """Answer one question (see Asker.ask for the options)."""
    return Asker(settings).ask(question, **options)
