"""Retrieval of `rag chat`'s follow-up questions: which retrieval query finds the second turn's document.

    python bench/bench_chat.py [--data ../shared/eval] [--work .bench-work/chat] [--k 5]

Two sets of two-turn conversations, written for this benchmark: ``bench/chat_followups.jsonl``
over ``samples/`` and ``bench/chat_followups_squad.jsonl`` over the SQuAD articles of the shared
data (it names the articles by file; their text is read from DATA at run time, never copied).
Each line: ``turns`` (two questions), ``relevant`` (the document the second answer is in) and
``switch`` (true: the second question changes the subject and names it: context should not hurt).

Each set is indexed with the default settings and the bundled embedding model into WORK (re-runs
reuse the index), then the second turn is searched (the default hybrid search, top K) with each
retrieval query:

- ``none``: the question alone (`rag ask`);
- ``previous``: the previous question, then this one;
- ``previous, question twice``: this one, the previous one, this one again (more weight on this one);
- ``rrf(none, previous)``: both searches, fused by reciprocal rank (two searches a turn);
- ``follow-up``: `rag chat`'s default (rag_cli.chat.Conversation): the previous question only when
  this one looks like a follow-up.

Prints, per set and overall, the second turn's document hit@1 and hit@3 (the relevant document
first, or among the first three documents, in the order of their best chunks) and recall@K (the
share of conversations whose relevant document holds one of the top K chunks), and for ``follow-up`` how
many second turns were taken as follow-ups.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def load_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def open_searcher(docs: Path, work: Path):
    from rag_cli.config import load_settings
    from rag_cli.indexer import index_paths
    from rag_cli.retrieve.search import Searcher

    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(work, env={}, flags={})
    started = time.perf_counter()
    index_paths(settings, [docs])
    print(f"  indexed {docs} into {settings.index_dir} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return settings, Searcher(settings)


def rrf(rankings: list[list[str]], k: int = 60) -> list[str]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank + 1)
    return [d for d, _ in sorted(scores.items(), key=lambda p: -p[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=REPO / ".bench-work" / "chat")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--misses", action="store_true", help="list each method's hit@1 misses (on stderr)")
    args = parser.parse_args()
    from rag_cli.chat import Conversation

    squad_docs = args.data / "squad" / "docs"
    sets = [("samples", REPO / "samples", HERE / "chat_followups.jsonl"),
            ("squad", squad_docs, HERE / "chat_followups_squad.jsonl")]
    k = args.k

    def conversation_query(method: str) -> Callable[[str, str], str]:
        def query(first: str, second: str) -> str:
            conversation = Conversation(method)
            conversation.record(conversation.plan(first), None)
            return conversation.search_query(second)
        return query

    methods: dict[str, Callable[[str, str], str] | None] = {
        "none": conversation_query("none"),
        "previous": conversation_query("previous"),
        "previous, question twice": lambda first, second: f"{second} {first} {second}",
        "rrf(none, previous)": None,  # two searches, fused below
        "follow-up (rag chat)": conversation_query("follow-up"),
    }
    results: dict[str, dict[str, list[tuple[bool, bool, bool]]]] = {}
    follow_ups: dict[str, tuple[int, int, int, int]] = {}
    for name, docs, pairs_file in sets:
        if not docs.is_dir():
            sys.exit(f"{docs} is missing (--data points at the shared eval folder)")
        pairs = load_pairs(pairs_file)
        missing = {d for p in pairs for d in p["relevant"] if not (docs / d).is_file()}
        if missing:
            sys.exit(f"{pairs_file.name}: no such documents in {docs}: {sorted(missing)}")
        folder = args.work / name
        if name == "squad":  # a private copy of the articles: the index's root is this folder
            copy = folder / "docs"
            if not copy.is_dir():
                shutil.copytree(docs, copy)
            docs = copy
        settings, searcher = open_searcher(docs, folder / "index")

        def top_docs(query: str, searcher: Any = searcher) -> list[str]:
            hits, _ = searcher.search(query, k)
            seen: list[str] = []
            for h in hits:
                if h.doc_id not in seen:
                    seen.append(h.doc_id)
            return seen

        per: dict[str, list[tuple[bool, bool, bool]]] = {}
        for method, make in methods.items():
            rows = []
            for p in pairs:
                first, second = p["turns"]
                if make is None:
                    hits_k = rrf([top_docs(second), top_docs(f"{first} {second}")])  # two top-K searches
                else:
                    hits_k = top_docs(make(first, second))
                relevant = set(p["relevant"])
                rows.append((bool(hits_k) and hits_k[0] in relevant, bool(relevant & set(hits_k[:3])),
                             bool(relevant & set(hits_k[:k]))))
                if args.misses and not rows[-1][0]:
                    print(f"  miss {method}: {p['id']}{' (switch)' if p.get('switch') else ''} {second!r} -> "
                          f"{hits_k[:3]}", file=sys.stderr)
            per[method] = rows
        results[name] = per
        taken = []  # whether rag chat takes the second question as a follow-up of the first
        for p in pairs:
            c = Conversation()
            c.record(c.plan(p["turns"][0]), None)
            taken.append(c.plan(p["turns"][1]).follow_up)
        follow = sum(1 for p, t in zip(pairs, taken) if t and not p.get("switch"))
        switched = sum(1 for p, t in zip(pairs, taken) if t and p.get("switch"))
        follow_ups[name] = (follow, sum(1 for p in pairs if not p.get("switch")), switched,
                            sum(1 for p in pairs if p.get("switch")))

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    total = {m: [r for name in results for r in results[name][m]] for m in methods}
    print(line(["retrieval query of the 2nd turn", *[f"{n} hit@1 / hit@3 / recall@{k}" for n in results],
                f"all ({len(total['none'])}) hit@1 / hit@3 / recall@{k}"]))
    print(line(["---"] * (len(results) + 2)))
    for method in methods:
        cells = [method]
        for rows in [*(results[n][method] for n in results), total[method]]:
            cells.append(" / ".join(f"{sum(r[i] for r in rows) / len(rows):.2f}" for i in range(3)))
        print(line(cells))
    for name, (f, nf, s, ns) in follow_ups.items():
        print(f"{name}: {len(results[name]['none'])} conversations; follow-up taken for {f} of {nf} follow-ups "
              f"and {s} of {ns} changes of subject")


if __name__ == "__main__":
    main()
