"""Calibrate the refusal `rag ask` makes before calling a model: it refuses when the best chunk's
evidence, its cosine similarity to the question plus `retrieval.coverage_weight` x the share of
the question's words (weighted by rarity) that the chunk holds, is below `retrieval.min_score`.

    cd DIR_WITH_INDEX && python /path/to/bench/calibrate_refusal.py QUESTIONS.jsonl \\
        [--answerable 500] [--seed 13] [--target 0.92]

Reads a question file in the format of ../shared/eval/README.md (with `answerable: false`
questions), retrieves every question once against the current index, and for each coverage
weight finds the smallest min_score that refuses at least --target of the unanswerable
questions, with the share of answerable ones it refuses wrongly. The pair refusing fewest
answerable questions is the recommendation. So that it is not judged on the questions it was
fitted to, both kinds of question are also split in two halves: the pair chosen on one half is
measured on the other.

On the SQuAD set (an index of ../shared/eval/squad/docs) this chose the defaults: coverage_weight 1.0,
min_score 0.81 (92.0% of the unanswerable questions refused, 3.2% of 500 answerable ones wrongly;
held out halves: 87.0% / 1.6% and 97.0% / 6.0%). The cosine similarity alone needs 0.415 to refuse
92%, and then refuses 17.0% of the answerable questions.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from rag_cli.config import load_settings
from rag_cli.retrieve.search import Searcher

WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
THRESHOLDS = [x / 200 for x in range(0, 301)]  # 0.0 .. 1.5


def refused(signals: list[tuple[float, float]], weight: float, min_score: float) -> float:
    return sum(s + weight * c < min_score for s, c in signals) / max(1, len(signals))


def threshold_for(unanswerable, weight: float, target: float) -> float:
    """The smallest min_score refusing at least ``target`` of the unanswerable questions."""
    return next((t for t in THRESHOLDS if refused(unanswerable, weight, t) >= target), THRESHOLDS[-1])


def choose(unanswerable, answerable, target: float) -> tuple[float, float, float]:
    """(answerable wrongly refused, weight, min_score): the pair that reaches ``target`` on the
    unanswerable questions refusing fewest answerable ones."""
    return min((refused(answerable, w, t), w, t) for w in WEIGHTS for t in [threshold_for(unanswerable, w, target)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", type=Path)
    parser.add_argument("--answerable", type=int, default=500, help="sample this many answerable questions")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--target", type=float, default=0.92,
                        help="share of unanswerable questions to refuse (above the 90%% aimed at, for a margin)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    unanswerable = [r for r in rows if r.get("answerable") is False]
    answerable = [r for r in rows if r.get("answerable", True)]
    rng = random.Random(args.seed)
    rng.shuffle(answerable)
    rng.shuffle(unanswerable)
    answerable = answerable[: args.answerable]
    searcher = Searcher(load_settings())
    signal: dict[str, tuple[float, float]] = {}
    for r in unanswerable + answerable:
        hits, _ = searcher.search(r["question"], 1)
        if not hits:
            signal[r["id"]] = (-1.0, 0.0)
            continue
        covered = searcher.coverage(r["question"], hits[0])
        signal[r["id"]] = (hits[0].score, 1.0 if covered is None else covered)
    u_all = [signal[r["id"]] for r in unanswerable]
    a_all = [signal[r["id"]] for r in answerable]
    print(f"{len(u_all)} unanswerable, {len(a_all)} answerable questions (seed {args.seed})\n")
    print("coverage_weight 0 is the cosine similarity alone:")
    print("  min_score  unanswerable refused  answerable wrongly refused")
    for t in [x / 100 for x in range(20, 56, 5)]:
        print(f"  {t:9.2f}  {refused(u_all, 0.0, t):20.1%}  {refused(a_all, 0.0, t):26.1%}")
    print(f"\nfor each coverage_weight, the min_score refusing >= {args.target:.0%} of the unanswerable:")
    print("  coverage_weight  min_score  unanswerable refused  answerable wrongly refused")
    for w in WEIGHTS:
        t = threshold_for(u_all, w, args.target)
        print(f"  {w:15.1f}  {t:9.3f}  {refused(u_all, w, t):20.1%}  {refused(a_all, w, t):26.1%}")
    wrong, w, t = choose(u_all, a_all, args.target)
    print(f"\nrecommended: coverage_weight = {w}, min_score = {t:.3f} "
          f"(unanswerable refused {refused(u_all, w, t):.1%}, answerable wrongly refused {wrong:.1%})")
    print("held out: the pair chosen on one half of the questions, measured on the other")
    halves = [(u_all[::2], a_all[::2], u_all[1::2], a_all[1::2]), (u_all[1::2], a_all[1::2], u_all[::2], a_all[::2])]
    for i, (u_fit, a_fit, u_test, a_test) in enumerate(halves, 1):
        _, w, t = choose(u_fit, a_fit, args.target)
        print(f"  half {i}: coverage_weight {w} min_score {t:.3f} -> unanswerable refused "
              f"{refused(u_test, w, t):.1%}, answerable wrongly refused {refused(a_test, w, t):.1%}")


if __name__ == "__main__":
    main()
