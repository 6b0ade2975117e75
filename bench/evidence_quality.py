"""Quoted evidence (issue 20) on the shared data: do the quotes hold the answer, do they equal the
documents' text, what faithfulness they give, and what they cost.

    python bench/evidence_quality.py [--data ../shared/eval] [--work .bench-work] \\
        [--only squad,sec10q] [--limit N] [--every N]

SQuAD: the fixed sample of bench/answer_quality.py (500 answerable questions drawn with
`random.Random(0)`, plus the 200 unanswerable ones); SEC 10-Q: all 81 questions. Each set is
indexed once with the default settings (the same cached index as `rag eval --docs`, in
WORK/.rag-eval/) and every question answered once in-process with the default settings
(ask.unsupported = "mark", so the answer text is the one before quoting). Printed per set:

- EM / F1 / contains (short gold answers) or token recall (long ones), and refusals, with the
  answers as shown (mark) and with ask.unsupported = "drop" applied to the same answers;
- gold in quote: of the answered answerable questions, the share whose supported quotes contain a
  gold answer (SQuAD-normalised), beside the share whose answer contains one;
- spans exact: supported quotes whose text equals the document's text at their offsets, the
  document re-read by its loader (must be 100%);
- faithfulness before (the answer's content words anywhere in the cited passages, as `rag eval`
  measured it until issue 20) and after (in each sentence's own quote: `rag eval`'s now);
- the evidence step's median and p95 milliseconds (Answer.timings["evidence"]).

Each answer's JSON (`rag ask --json`'s object with the question's id and gold answers) goes to
WORK/evidence-SET.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rag_cli.ask import Asker
from rag_cli.config import load_settings
from rag_cli.evaluate import metrics as m
from rag_cli.evaluate.configs import with_eval_index
from rag_cli.evaluate.dataset import Question, load_questions
from rag_cli.evaluate.runner import SHORT_ANSWER_TOKENS
from rag_cli.generate.answering import strip_citations, support
from rag_cli.generate.evidence import drop_unsupported, faithfulness
from rag_cli.ingest.formats import loader_for
from rag_cli.models import Answer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from answer_quality import squad_sample  # noqa: E402  (the same fixed sample)


class Texts:
    """Documents' text as their loaders read it, each file read once."""

    def __init__(self) -> None:
        self._texts: dict[tuple[str, str], str] = {}

    def __call__(self, path: str, doc_id: str) -> str:
        if (path, doc_id) not in self._texts:
            loader = loader_for(Path(path))
            assert loader is not None, path
            for doc in loader.load(Path(path), doc_id).documents:
                self._texts[(path, doc.doc_id)] = doc.text
        return self._texts[(path, doc_id)]


def scores(said: str, q: Question, short: bool) -> dict[str, float]:
    if short:
        return {"em": m.exact_match(said, q.answers), "f1": m.token_f1(said, q.answers),
                "contains": m.contains(said, q.answers)}
    return {"token_recall": m.token_recall(said, q.answers)}


def run(name: str, questions: list[Question], docs: Path, work: Path, details: Path) -> None:
    settings = with_eval_index(load_settings(work), [docs])
    asker = Asker(settings)
    asker.generator(settings.llm.model).warm_up()
    texts = Texts()
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    spans = exact = 0
    ms: list[float] = []
    started = time.perf_counter()
    out = details.open("w")
    for n, q in enumerate(questions, start=1):
        answer: Answer = asker.ask(q.question, use_cache=False)
        out.write(json.dumps({"id": q.qid, "answers": list(q.answers), **answer.to_dict()}) + "\n")
        if n % 50 == 0:
            print(f"  {n}/{len(questions)} in {time.perf_counter() - started:.0f} s", flush=True)
        if answer.error is not None:
            add("errors", 1.0)
            continue
        dropped = "" if answer.refused else drop_unsupported(answer.answer, answer.evidence)
        short = bool(q.answers) and all(len(m.normalize_answer(a).split()) <= SHORT_ANSWER_TOKENS for a in q.answers)
        if q.answerable and q.answers:
            for key, value in scores("" if answer.refused else strip_citations(answer.answer), q, short).items():
                add(key, value)
            for key, value in scores(strip_citations(dropped), q, short).items():
                add(f"{key} (drop)", value)
        add("refused_answerable" if q.answerable else "refused_unanswerable", float(answer.refused))
        add(("refused_answerable" if q.answerable else "refused_unanswerable") + " (drop)", float(not dropped))
        if answer.refused:
            continue
        ms.append(1000 * answer.timings.get("evidence", 0.0))
        cited = [c.text for c in answer.citations if c.cited]
        add("faithfulness before", support(answer.answer, ["\n".join(cited)])[0] if cited else 0.0)
        add("faithfulness after", faithfulness(answer.evidence))
        supported = [e for e in answer.evidence if e.supported]
        add("answers with a quote", float(bool(supported)))
        add("sentences supported", sum(e.supported for e in answer.evidence) / max(1, len(answer.evidence)))
        for e in supported:
            spans += 1
            exact += texts(e.path, e.doc_id)[e.start:e.end] == e.text  # type: ignore[misc]
        if q.answerable and q.answers and short:
            add("gold in answer", m.contains(strip_citations(answer.answer), q.answers))
            add("gold in quote", max((m.contains(e.text, q.answers) for e in supported), default=0.0))
    out.close()
    print(f"\n== {name}: {len(questions)} questions, {time.perf_counter() - started:.0f} s")
    for key, values in rows.items():
        print(f"  {key:28s} {statistics.fmean(values):.3f}  (n={len(values)})")
    print(f"  {'spans exact':28s} {exact}/{spans} = {exact / max(1, spans):.1%}")
    if ms:
        ms.sort()
        print(f"  {'evidence ms p50 / p95':28s} {statistics.median(ms):.2f} / {ms[int(0.95 * (len(ms) - 1))]:.2f}"
              f"  (n={len(ms)})")


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=here / ".bench-work")
    parser.add_argument("--only", default="squad,sec10q")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick look)")
    parser.add_argument("--every", type=int, default=1, help="every Nth question of each set (a smaller sample "
                        "with answerable and unanswerable questions in their proportions)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sets = {"squad": (squad_sample(args.data, work / "squad_fixed.jsonl"), args.data / "squad" / "docs"),
            "sec10q": (args.data / "sec10q" / "questions.jsonl", args.data / "sec10q" / "docs")}
    for key in args.only.split(","):
        questions_file, docs = sets[key]
        questions = load_questions(questions_file)[:: args.every]
        run(key, questions[: args.limit] if args.limit else questions, docs.resolve(), work,
            work / f"evidence-{key}.jsonl")


if __name__ == "__main__":
    main()
