"""The crash canary's cost (issue 16): the one-time test decode of a GGUF model in a child process,
and what a later run pays once its outcome is recorded.

    python bench/bench_canary.py [--repeat 5]

For each bundled model: the child's wall time (start, import, load, decode of the test prompt and two
tokens) and the lookup of a recorded outcome (``canary.plan`` with records present); then
`rag ask --no-cache` on the indexed samples as fresh processes, with the records deleted before each
run (the first ask after an install or an upgrade) and with them kept (every later ask). Prints
medians and the difference. Wall-clock figures: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
QUESTION = "How often should I feed my starter?"


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true", help="skip prompt processing with extra buffers on/off")
    args = parser.parse_args()
    from rag_cli.generate import canary
    from rag_cli.model_files import cache_root, resolve_gguf

    threads = max(1, os.cpu_count() or 1)
    print(f"llama.cpp: {canary.system_info()}")
    print(f"{'model':<34} {'child (s)':>10} {'load (s)':>9} {'decode (s)':>11} {'recorded (ms)':>14}")
    for model in ("bundled", "smollm2"):
        path = resolve_gguf(model)
        extra = canary.candidates("auto", canary.system_info())[0]
        probes = [canary.probe(path, extra_buffers=extra, threads=threads) for _ in range(args.repeat)]
        assert all(p.outcome == "ok" for p in probes), [p.detail for p in probes]
        canary.plan(path, threads=threads)  # records it
        lookups = []
        for _ in range(args.repeat * 4):
            started = time.perf_counter()
            chosen = canary.plan(path, threads=threads, run=lambda *a, **k: sys.exit("recorded outcome not used"))
            lookups.append(time.perf_counter() - started)
        assert chosen.probes[0].cached
        print(f"{Path(path).name:<34} {median([p.seconds for p in probes]):>10.2f} "
              f"{median([p.data['load_seconds'] for p in probes]):>9.2f} "
              f"{median([p.data['decode_seconds'] for p in probes]):>11.2f} {median(lookups) * 1000:>14.1f}")

    records = cache_root() / "llama-canary"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_SERVE_USE": "never"}
    with tempfile.TemporaryDirectory(prefix="rag-bench-canary-") as tmp:
        work = Path(tmp)
        shutil.copytree(REPO / "samples", work / "samples")
        subprocess.run([sys.executable, "-m", "rag_cli", "index", "samples"], cwd=work, env=env, check=True,
                       capture_output=True)
        times: dict[str, list[float]] = {"first ask (test decode runs)": [], "later ask (recorded)": []}
        for _ in range(args.repeat):
            for label, drop in (("first ask (test decode runs)", True), ("later ask (recorded)", False)):
                if drop:
                    shutil.rmtree(records, ignore_errors=True)
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "rag_cli", "ask", "--no-cache", QUESTION], cwd=work,
                                      env=env, capture_output=True, text=True)
                times[label].append(time.perf_counter() - started)
                assert done.returncode in (0, 6), done.stderr
    first, later = (median(v) for v in times.values())
    for label, values in times.items():
        print(f"{label:<32} median {median(values):.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"one-time cost of the canary in `rag ask`: {first - later:+.2f} s ({first / later:.2f}x)")
    if not args.no_speed:
        print(f"\nprompt processing, 1,000 tokens, {threads} threads (tokens/s, median of 3)")
        for model in ("bundled", "smollm2"):
            path = resolve_gguf(model)
            on, off = (prompt_speed(path, extra, threads) for extra in (True, False))
            print(f"{Path(path).name:<34} extra buffers on {on:>7.0f}  off {off:>7.0f}  off/on {off / on:.2f}")


# A child: extra_buffers on or off as the canary loads them, then the same prompt evaluated 3 times.
_SPEED_CHILD = """
import statistics, sys, time
from llama_cpp import Llama
from rag_cli.generate import canary
path, extra, threads = sys.argv[1], sys.argv[2] == "on", int(sys.argv[3])
with canary.model_params(extra_buffers=extra):
    llm = Llama(path, n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)
text = " ".join(f"The starter is fed at hour {i} with flour and water." for i in range(200))
tokens = llm.tokenize(text.encode())[:1000]
assert len(tokens) == 1000, len(tokens)
rates = []
for _ in range(3):
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    rates.append(len(tokens) / (time.perf_counter() - started))
print(statistics.median(rates))
"""


def prompt_speed(path: str, extra_buffers: bool, threads: int) -> float:
    done = subprocess.run([sys.executable, "-c", _SPEED_CHILD, path, "on" if extra_buffers else "off", str(threads)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
