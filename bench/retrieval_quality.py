"""Retrieval quality of every mode on the shared data, with `rag eval --retrieval-only`: the
README's retrieval table, reproduced with one command.

    python bench/retrieval_quality.py [--data ../shared/eval] [--work .bench-work] [--only scifact,squad,sec10q]

Each data set is indexed once with the default settings into WORK/.rag-eval/ (SciFact takes
10-15 minutes on 2 cores; re-runs reuse the index), then evaluated in each configuration:
dense, keyword, hybrid with reciprocal-rank fusion, and the default (hybrid, weighted fusion
with the document signal). Prints per data set the metric the targets name, beside them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "dense": '[retrieval]\nmode = "dense"\n',
    "keyword": '[retrieval]\nmode = "keyword"\n',
    "hybrid-rrf": '[retrieval]\nmode = "hybrid"\nfusion = "rrf"\n',
    "hybrid-weighted, no document signal": '[retrieval]\nmode = "hybrid"\ndocument_weight = 0.0\n',
    "default (hybrid-weighted + document)": "",
}

# (questions, documents, metric, target, label)
DATASETS = {
    "scifact": ("scifact/train.jsonl", "scifact/corpus.jsonl", "ndcg@10", 0.73, "nDCG@10 (documents)"),
    "squad": ("squad/questions.jsonl", "squad/docs", "context_recall@5", 0.97, "gold answer in top-5 chunks"),
    "sec10q": ("sec10q/questions.jsonl", "sec10q/docs", "recall@5", 0.95, "document recall@5"),
}


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=here / ".bench-work")
    parser.add_argument("--only", default=",".join(DATASETS))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    names = list(CONFIGS)
    files = []
    for i, name in enumerate(names):
        path = args.work / f"config{i}.toml"
        path.write_text(CONFIGS[name])
        files.append(path)
    for key in args.only.split(","):
        questions, docs, metric, target, label = DATASETS[key]
        out = args.work / f"{key}.json"
        cmd = ["rag", "eval", str(args.data / questions), "--docs", str(args.data / docs), "--retrieval-only",
               "--out", str(out)] + [a for f in files for a in ("--config", str(f))]
        started = time.perf_counter()
        print(f"\n== {key}: {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd, cwd=args.work, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            sys.exit(f"{key}: rag eval exited {done.returncode}")
        reports = json.loads(out.read_text())["reports"]
        print(f"{key}: {reports[0]['counts']['questions']} questions, {time.perf_counter() - started:.0f} s; "
              f"{label}, target >= {target}")
        for name, report in zip(names, reports):
            m = report["metrics"]
            value = m.get(metric)
            mark = "" if value is None else ("  meets target" if value >= target else "")
            extra = "  ".join(f"{k} {m[k]:.3f}" for k in ("ndcg@10", "recall@5", "recall@10", "context_recall@5")
                              if k in m and k != metric)
            print(f"  {name:38s} {metric} {value:.3f}{mark}   ({extra})")


if __name__ == "__main__":
    main()
