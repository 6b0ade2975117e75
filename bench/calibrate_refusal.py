"""Calibrate the refusal `rag ask` makes before calling a model: it refuses when the best chunk's
evidence, its cosine similarity to the question plus `retrieval.coverage_weight` x the share of
the question's words (weighted by rarity) that the chunk holds, is below `retrieval.min_score`.

    cd DIR_WITH_INDEX && python /path/to/bench/calibrate_refusal.py QUESTIONS.jsonl \\
        [--answerable 500] [--seed 13] [--target 0.92]

The library does the work (rag_cli/evaluate/calibrate.py, which `rag eval --calibrate` runs);
this script adds a sample of the answerable questions and the cosine-only table. It reads a
question file in the format of ../shared/eval/README.md (with `answerable: false`
questions), retrieves every question once against the current index, and for each coverage
weight finds the smallest min_score that refuses at least --target of the unanswerable
questions, with the share of answerable ones it refuses wrongly. The pair refusing fewest
answerable questions is the recommendation. So that it is not judged on the questions it was
fitted to, both kinds of question are also split in two halves (stratified, seeded): the pair
chosen on one half is measured on the other.

On the SQuAD set (an index of ../shared/eval/squad/docs) this chose the defaults: coverage_weight 1.0,
min_score 0.81 (92.0% of the unanswerable questions refused, 3.2% of 500 answerable ones wrongly;
the library version gives the same pair). Held-out halves (seeds 13 and 14): 96.0% / 4.4% and
87.0% / 2.8%. The cosine similarity alone needs 0.415 to refuse 92%, and then refuses 17.0% of the
answerable questions.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from rag_cli.config import load_settings
from rag_cli.evaluate.calibrate import calibrate, measure, rates
from rag_cli.evaluate.dataset import load_questions
from rag_cli.retrieve.search import Searcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", type=Path)
    parser.add_argument("--answerable", type=int, default=500, help="sample this many answerable questions")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--target", type=float, default=0.92,
                        help="share of unanswerable questions to refuse (above the 90%% aimed at, for a margin)")
    args = parser.parse_args()
    questions = load_questions(args.questions)
    answerable = [q for q in questions if q.answerable]
    random.Random(args.seed).shuffle(answerable)
    chosen = [q for q in questions if not q.answerable] + answerable[: args.answerable]
    settings = load_settings()
    evidence = measure(Searcher(settings), chosen, settings.retrieval.top_k)
    n_u = sum(not e.answerable for e in evidence)
    print(f"{n_u} unanswerable, {len(evidence) - n_u} answerable questions (seed {args.seed})\n")
    print("coverage_weight 0 is the cosine similarity alone:")
    print("  min_score  unanswerable refused  answerable wrongly refused")
    for t in [x / 100 for x in range(20, 56, 5)]:
        r = rates(evidence, 0.0, t)
        print(f"  {t:9.2f}  {r.refused_unanswerable:20.1%}  {r.refused_answerable:26.1%}")
    result = calibrate(evidence, target=args.target, folds=5, seed=args.seed)
    print(f"\nfor each coverage_weight, the min_score refusing >= {args.target:.0%} of the unanswerable:")
    print("  coverage_weight  min_score  unanswerable refused  answerable wrongly refused")
    for s in result.tradeoff:
        print(f"  {s.coverage_weight:15.1f}  {s.min_score:9.3f}  {s.rates.refused_unanswerable:20.1%}  "
              f"{s.rates.refused_answerable:26.1%}")
    b = result.best
    print(f"\nrecommended: coverage_weight = {b.coverage_weight}, min_score = {b.min_score:.3f} "
          f"(unanswerable refused {b.rates.refused_unanswerable:.1%}, answerable wrongly refused "
          f"{b.rates.refused_answerable:.1%})")
    print("held out: the pair chosen on one half of the questions, measured on the other")
    for seed in (args.seed, args.seed + 1):
        half = calibrate(evidence, target=args.target, folds=0, holdout=0.5, seed=seed)
        assert half.heldout is not None
        print(f"  seed {seed}: coverage_weight {half.best.coverage_weight} min_score {half.best.min_score:.3f} -> "
              f"unanswerable refused {half.heldout.refused_unanswerable:.1%}, answerable wrongly refused "
              f"{half.heldout.refused_answerable:.1%}")


if __name__ == "__main__":
    main()
