"""Retrieval modes side by side on a question file, against the current index (until `rag eval`):
document hit@k and recall@k, and for questions with short gold answers, the share whose answer
appears verbatim in the top-k chunks.

    cd DIR_WITH_INDEX && python /path/to/bench/retrieval_modes.py QUESTIONS.jsonl [--k 5] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rag_cli.config import load_settings
from rag_cli.retrieve.search import Searcher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("questions", type=Path)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("answerable", True) and r.get("relevant")]
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    searcher = Searcher(load_settings())
    print(f"{len(rows)} questions, k={args.k}")
    for mode in ("dense", "keyword", "hybrid"):
        hit = recall = contains = short = 0.0
        started = time.perf_counter()
        for r in rows:
            hits, _ = searcher.search(r["question"], args.k, mode=mode)
            docs = {h.doc_id for h in hits}
            relevant = set(r["relevant"])
            hit += bool(docs & relevant)
            recall += len(docs & relevant) / len(relevant)
            answers = [a for a in r.get("answers", []) if len(a) < 60]
            if answers:
                short += 1
                text = " ".join(h.text for h in hits).lower()
                contains += any(a.lower() in text for a in answers)
        n = len(rows)
        extra = f"  answer in top {args.k}: {contains / short:.3f}" if short else ""
        print(f"{mode:8s} doc hit@{args.k} {hit / n:.3f}  doc recall@{args.k} {recall / n:.3f}{extra}  "
              f"({(time.perf_counter() - started) / n * 1000:.0f} ms/question)")


if __name__ == "__main__":
    main()
