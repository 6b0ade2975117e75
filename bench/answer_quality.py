"""Answer quality end to end (retrieval included) with `rag eval`: the README's answer table,
reproduced with one command.

    python bench/answer_quality.py [--data ../shared/eval] [--work .bench-work] \\
        [--only squad,sec10q] [--model PATH.gguf ...] [--limit N]

SQuAD: a fixed sample, the 500 answerable questions `random.Random(0).sample` draws from the
4,306 answerable ones (file order), plus all 200 unanswerable ones. SEC 10-Q: all 81 questions.
Each set is indexed once with the default settings into WORK/.rag-eval/ and answered in each
configuration:

- default: the settings as shipped (Gemma 3 270M base; 2 narrowed sentences; answers snapped to
  the sources' words; refusal on cosine + coverage);
- baseline: the same model and retrieval with a plain prompt: the top-5 chunks as they are,
  "Question: ... Answer:", the cosine threshold alone for refusals, the model's words as they come;
- each --model: the default settings with that GGUF file (a bigger model, for users who have one).

Generation runs on the CPU: about 25 minutes per configuration for SQuAD on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

BASELINE = """# The plain baseline: the top-5 chunks as they are, a plain prompt, refusal by cosine alone,
# the model's words as they come.
[retrieval]
sentences = 0
coverage_weight = 0.0
min_score = 0.35

[prompt]
completion = "{sources}\\n\\nQuestion: {question}\\nAnswer:"
completion_sources = 5

[ask]
snap_to_span = false
min_support = 0.0
"""

COLUMNS = [("em", "EM"), ("f1", "F1"), ("contains", "contains"), ("faithfulness", "faithful"),
           ("citation_validity", "cit.valid"), ("refused_unanswerable", "unans.refused"),
           ("refused_answerable", "ans.refused"), ("cited_relevant", "right doc cited"),
           ("token_recall", "token recall")]


def squad_sample(data: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in (data / "squad" / "questions.jsonl").open() if line.strip()]
    answerable = [r for r in rows if r.get("answerable", True) and r.get("answers")]
    unanswerable = [r for r in rows if r.get("answerable", True) is False]
    chosen = random.Random(0).sample(answerable, 500) + unanswerable
    out.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return out


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=here / ".bench-work")
    parser.add_argument("--only", default="squad,sec10q")
    parser.add_argument("--model", action="append", default=[], help="also evaluate this GGUF file")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick look)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    configs = {"default": "# the defaults\n", "baseline": BASELINE}
    for path in args.model:
        configs[Path(path).name] = f'[llm]\nmodel = "{Path(path).resolve()}"\n'
    files = []
    for i, text in enumerate(configs.values()):
        (work / f"answers{i}.toml").write_text(text)
        files.append(work / f"answers{i}.toml")
    sets = {"squad": (squad_sample(args.data, work / "squad_fixed.jsonl"), args.data / "squad" / "docs"),
            "sec10q": (args.data / "sec10q" / "questions.jsonl", args.data / "sec10q" / "docs")}
    for key in args.only.split(","):
        questions, docs = sets[key]
        out = work / f"answers-{key}.json"
        cmd = ["rag", "eval", str(questions), "--docs", str(docs), "--out", str(out),
               "--details", str(work / f"answers-{key}.jsonl")] + [a for f in files for a in ("--config", str(f))]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        print(f"\n== {key}: {' '.join(cmd)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=work, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            sys.exit(f"{key}: rag eval exited {done.returncode}")
        reports = json.loads(out.read_text())["reports"]
        print(f"{key}: {reports[0]['counts']['questions']} questions, {time.perf_counter() - started:.0f} s")
        shown = [(k, label) for k, label in COLUMNS if any(k in r["metrics"] for r in reports)]
        print("  " + " | ".join(["configuration"] + [label for _, label in shown] + ["generate p50", "total p50"]))
        for name, report in zip(configs, reports):
            m, lat = report["metrics"], report["latency"]
            cells = [f"{m[k]:.3f}" if k in m else "-" for k, _ in shown]
            cells += [f"{lat.get(s, {}).get('p50', 0):.2f} s" for s in ("generate", "total")]
            print("  " + " | ".join([name] + cells))


if __name__ == "__main__":
    main()
