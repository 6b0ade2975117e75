"""Calibrate `retrieval.min_score`: the retrieval score below which `rag ask` refuses without
calling the model.

    cd DIR_WITH_INDEX && python /path/to/bench/calibrate_refusal.py QUESTIONS.jsonl [--answerable N]

Reads a question file in the format of ../shared/eval/README.md (with `answerable: false`
questions), takes the best chunk's cosine score for each question against the current index,
and prints, for a sweep of thresholds, the share of unanswerable questions refused and of
answerable ones wrongly refused.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from rag_cli.config import load_settings
from rag_cli.retrieve.search import Searcher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("questions", type=Path)
    parser.add_argument("--answerable", type=int, default=500, help="sample this many answerable questions")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    unanswerable = [r for r in rows if r.get("answerable") is False]
    answerable = [r for r in rows if r.get("answerable", True)]
    random.Random(args.seed).shuffle(answerable)
    answerable = answerable[: args.answerable]
    searcher = Searcher(load_settings())
    top = {}
    for r in unanswerable + answerable:
        hits, _ = searcher.search(r["question"], 1)
        top[r["id"]] = hits[0].score if hits else -1.0
    print(f"{len(unanswerable)} unanswerable, {len(answerable)} answerable questions")
    print("threshold  unanswerable refused  answerable wrongly refused")
    for t in [x / 100 for x in range(10, 66, 5)]:
        u = sum(top[r["id"]] < t for r in unanswerable) / max(1, len(unanswerable))
        a = sum(top[r["id"]] < t for r in answerable) / max(1, len(answerable))
        print(f"{t:9.2f}  {u:20.1%}  {a:26.1%}")


if __name__ == "__main__":
    main()
