"""A small A/B of answer settings until `rag eval` exists: the share of SQuAD questions whose gold
answer appears in the answer, and seconds per question.

    cd DIR_WITH_A_SQUAD_INDEX && python /path/to/bench/compare_answers.py QUESTIONS.jsonl \\
        --set retrieval.sentences=0 --set retrieval.sentences=2 [--limit 40]

Each --set (comma-separate several keys: a=1,b=2) is one configuration, run on the same
answerable questions (every 100th from the 8th, in file order).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from rag_cli.ask import Asker
from rag_cli.config import load_settings
from rag_cli.retrieve.search import Searcher


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("questions", type=Path)
    parser.add_argument("--set", dest="configs", action="append", default=[])
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("answerable", True) and r.get("answers")][7::100][: args.limit]
    base = load_settings()
    searcher = Searcher(base)
    generators: dict = {}
    for config in args.configs or [""]:
        values = dict(part.split("=", 1) for part in config.split(",") if part)
        settings = base.with_values(values, "bench", parse_text=True)
        asker = Asker(settings, searcher=searcher, generators=generators)
        contained = cited = 0
        started = time.perf_counter()
        for row in rows:
            answer = asker.ask(row["question"], use_cache=False)
            contained += any(norm(g) in norm(answer.answer) for g in row["answers"])
            cited += any(c.cited for c in answer.citations)
        per_q = (time.perf_counter() - started) / len(rows)
        print(f"{config or 'defaults':60s} gold contained {contained}/{len(rows)}  cited {cited}/{len(rows)}  "
              f"{per_q:.2f} s/question")


if __name__ == "__main__":
    main()
