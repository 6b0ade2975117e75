"""Running an evaluation: every question through retrieval (and, unless retrieval-only, the
whole answer pipeline), metrics per question, then aggregates. Ctrl-C keeps what was done."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_cli import observe
from rag_cli.ask import Asker
from rag_cli.config import Settings
from rag_cli.errors import ExitCode, RagError
from rag_cli.evaluate import metrics as m
from rag_cli.evaluate.dataset import Question
from rag_cli.generate.answering import strip_citations
from rag_cli.generate.evidence import faithfulness
from rag_cli.progress import NullProgress, Progress
from rag_cli.retrieve.search import Searcher

DEFAULT_KS = (1, 5, 10, 20)
STAGES = ("embed", "retrieve", "generate", "total")
LOWER_IS_BETTER = ("refused_answerable",)
SHORT_ANSWER_TOKENS = 12  # longer gold answers are scored by token recall, not EM/F1/containment


@dataclass
class EvalReport:
    """Aggregates (``metrics``), latency percentiles and one row per question."""

    label: str
    questions_file: str
    retrieval_only: bool
    config: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    SCHEMA = "rag-cli/eval-report/v1"

    def to_dict(self, *, rows: bool = False) -> dict[str, Any]:
        out = {"schema": self.SCHEMA, "label": self.label, "questions_file": self.questions_file,
               "retrieval_only": self.retrieval_only, "config": self.config,
               "metrics": {k: (round(v, 4) if v is not None else None) for k, v in self.metrics.items()},
               "counts": self.counts, "latency": self.latency, "models": self.models,
               "interrupted": self.interrupted, "seconds": round(self.seconds, 2)}
        if rows:
            out["rows"] = self.rows
        return out


def run_eval(settings: Settings, questions: Sequence[Question], *, label: str = "", questions_file: str = "",
             retrieval_only: bool = False, ks: Sequence[int] = DEFAULT_KS, progress: Progress | None = None,
             searcher: Searcher | None = None, asker: Asker | None = None,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> EvalReport:
    progress = progress or NullProgress()
    searcher = searcher or Searcher(settings)
    if not retrieval_only and asker is None:
        asker = Asker(settings, searcher=searcher)
    r = settings.retrieval
    report = EvalReport(label=label, questions_file=questions_file, retrieval_only=retrieval_only, config={
        "retrieval.mode": r.mode, "retrieval.top_k": r.top_k, "embedding.model": settings.embedding.model,
        "chunking": f"{settings.chunking.strategy}/{settings.chunking.size}/{settings.chunking.overlap}",
        "llm.model": None if retrieval_only else settings.llm.model})
    if settings.llm.url and not retrieval_only:
        report.config["llm.url"] = settings.llm.url
    depth = max(ks) * 3  # chunks, so that max(ks) distinct documents are usually there
    with observe.span("eval.warm_up"):
        _warm_up(searcher, asker, settings)  # so that model loading does not count as question latency
    started = time.perf_counter()
    progress.update("questions", total=len(questions))
    try:
        for q in questions:
            with observe.span("eval.question", id=q.qid, label=label or None):
                row = _evaluate_one(q, searcher, asker, depth, ks, retrieval_only)
            report.rows.append(row)
            if on_row:
                on_row(row)
            progress.update("questions", advance=1)
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - started
    _aggregate(report, ks)
    return report


def _warm_up(searcher: Searcher, asker: Asker | None, settings: Settings) -> None:
    if searcher.embedder is not None:  # None: a RemoteSearcher, whose server has the model loaded
        searcher.embedder.warm_up()
    if asker is not None:
        try:
            asker.generator(settings.llm.model).warm_up()
        except RagError:
            pass  # a model that cannot load shows up in every row's error


def _evaluate_one(q: Question, searcher: Searcher, asker: Asker | None, depth: int, ks: Sequence[int],
                  retrieval_only: bool) -> dict[str, Any]:
    hits, timings = searcher.search(q.question, depth)
    ranked = m.ranked_documents(h.doc_id for h in hits)
    relevant = set(q.relevant)
    row: dict[str, Any] = {"id": q.qid, "question": q.question, "answerable": q.answerable,
                           "retrieved": ranked[: max(ks)], "relevant": list(q.relevant),
                           "timings": dict(timings)}
    if relevant:
        for k in ks:
            row[f"hit@{k}"] = m.hit_at(ranked, relevant, k)
            row[f"recall@{k}"] = m.recall_at(ranked, relevant, k)
        row["mrr@10"] = m.mrr_at(ranked, relevant, 10)
        row["ndcg@10"] = m.ndcg_at(ranked, relevant, 10)
    short = bool(q.answers) and all(len(m.normalize_answer(a).split()) <= SHORT_ANSWER_TOKENS for a in q.answers)
    if q.answerable and short:
        for k in ks:
            text = " ".join(h.text for h in hits[:k])
            row[f"context_recall@{k}"] = m.contains(text, q.answers)
    if retrieval_only or asker is None:
        return row
    answer = asker.ask(q.question, use_cache=False, log=False)  # a test set: not the query log
    row.update(answer=answer.answer, refused=answer.refused, refusal_reason=answer.refusal_reason,
               model=answer.model, error=answer.error, error_code=answer.error_code,
               removed_citations=answer.removed_citations,
               completion_tokens=answer.completion_tokens,
               citations=[c.doc_id for c in answer.citations if c.cited])
    row["timings"] = {**timings, **{k: v for k, v in answer.timings.items() if k not in timings}}
    row["timings"]["total"] = answer.timings.get("total", 0.0)
    if q.answerable and q.answers:
        said = "" if answer.refused else strip_citations(answer.answer)  # [n] markers are not the answer
        if short:
            row.update(em=m.exact_match(said, q.answers), f1=m.token_f1(said, q.answers),
                       contains=m.contains(said, q.answers))
        else:  # long reference answers: how much of them the answer covers
            row["token_recall"] = m.token_recall(said, q.answers)
    if q.answerable and relevant:  # the right document cited (a refusal cites none)
        row["cited_relevant"] = float(any(c.cited and c.doc_id in relevant for c in answer.citations))
    if not answer.refused and answer.error is None:
        # The share of the answer's words its quoted spans hold: what `rag ask --evidence` shows.
        row["faithfulness"] = faithfulness(answer.evidence)
        valid = sum(1 for c in answer.citations if c.cited)
        checked = valid + answer.removed_citations
        row["citation_validity"] = valid / checked if checked else None
    return row


def _aggregate(report: EvalReport, ks: Sequence[int]) -> None:
    rows = report.rows
    names = [f"hit@{k}" for k in ks] + [f"recall@{k}" for k in ks] + ["mrr@10", "ndcg@10"] + \
        [f"context_recall@{k}" for k in ks] + ["em", "f1", "contains", "token_recall", "faithfulness",
                                               "citation_validity", "cited_relevant"]
    for name in names:
        value = m.mean(r[name] for r in rows if r.get(name) is not None)
        if value is not None:
            report.metrics[name] = value
    report.counts = {"questions": len(rows), "with_relevant": sum(1 for r in rows if r["relevant"]),
                     "answerable": sum(1 for r in rows if r["answerable"]),
                     "unanswerable": sum(1 for r in rows if not r["answerable"])}
    if not report.retrieval_only and rows:
        unans = [r for r in rows if not r["answerable"]]
        ans = [r for r in rows if r["answerable"]]
        if unans:
            report.metrics["refused_unanswerable"] = sum(r["refused"] for r in unans) / len(unans)
        if ans:
            report.metrics["refused_answerable"] = sum(r["refused"] for r in ans) / len(ans)
        report.counts["errors"] = sum(1 for r in rows if r.get("error"))
        # of which the llm.url server could not be reached or kept failing
        report.counts["unavailable"] = sum(1 for r in rows
                                           if r.get("error") and r.get("error_code") == ExitCode.LLM_UNAVAILABLE)
        report.counts["removed_citations"] = sum(r.get("removed_citations", 0) for r in rows)
        for r in rows:
            if r.get("model"):
                report.models[r["model"]] = report.models.get(r["model"], 0) + 1
        gen = [(r["completion_tokens"], r["timings"].get("generate", 0.0)) for r in rows
               if r["timings"].get("generate")]
        if gen:
            report.metrics["tokens_per_s"] = sum(t for t, _ in gen) / max(1e-9, sum(s for _, s in gen))
    for stage in STAGES:
        values = [r["timings"][stage] for r in rows if stage in r["timings"]]
        if stage == "total" and report.retrieval_only:
            values = [r["timings"]["embed"] + r["timings"]["retrieve"] for r in rows]
        if values:
            report.latency[stage] = {"p50": round(m.percentile(values, 50), 4),
                                     "p95": round(m.percentile(values, 95), 4)}


def compare(reports: Sequence[EvalReport]) -> list[tuple[str, list[float | None], float | None]]:
    """(metric, values per report, last minus first) for every metric any report has."""
    names = list(dict.fromkeys(name for rep in reports for name in rep.metrics))
    rows = []
    for name in names:
        values = [rep.metrics.get(name) for rep in reports]
        delta = values[-1] - values[0] if values[0] is not None and values[-1] is not None else None
        rows.append((name, values, delta))
    return rows


def gate(report: EvalReport, baseline: dict[str, Any], max_drop: float) -> list[str]:
    """Metrics that fell by more than ``max_drop`` against a saved report (JSON)."""
    failures = []
    for name, old in (baseline.get("metrics") or {}).items():
        new = report.metrics.get(name)
        if old is None or new is None or name == "tokens_per_s":
            continue
        drop = (new - old) if name in LOWER_IS_BETTER else (old - new)
        if drop > max_drop:
            failures.append(f"{name}: {old:.4f} -> {new:.4f} (worse by {drop:.4f}, allowed {max_drop})")
    return failures
