"""bm25s is imported without scipy (searching never needs it; the import costs every cold `rag ask`),
and an index built that way searches exactly like one built with scipy loaded."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SAMPLES

SCRIPT = r"""
import json, sys
if sys.argv[1] == "scipy-first":
    import scipy.sparse  # noqa: F401  (as when torch or transformers loaded it)
from rag_cli.store.keyword import KeywordIndex
texts = [p.read_text(errors="replace") for p in sorted(__import__("pathlib").Path(sys.argv[2]).rglob("*.md"))]
chunks = [" ".join(t.split()[i:i + 60]) for t in texts for i in range(0, len(t.split()), 60)]
ids = [f"c{i}" for i in range(len(chunks))]
index = KeywordIndex.build(ids, chunks, [{"doc_id": f"d{i // 5}"} for i in range(len(chunks))], tag=1)
questions = ["How often should I feed my starter?", "oven temperature for the loaf", "what is autolyse",
             "hydration of the dough", "rye flour"]
print(json.dumps({"scipy": "scipy.sparse" in sys.modules,
                  "results": [index.search(q, 5) for q in questions]}))
"""


def _run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(SAMPLES)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_bm25s_without_scipy_searches_like_with_it() -> None:
    without, with_scipy = _run("plain"), _run("scipy-first")
    assert without["scipy"] is False and with_scipy["scipy"] is True
    assert any(without["results"]), "the questions find something"
    assert without["results"] == with_scipy["results"]


def test_scipy_stays_importable_after_bm25s() -> None:
    done = subprocess.run([sys.executable, "-c", "from rag_cli.store.keyword import _bm25s; _bm25s(); "
                           "import scipy.sparse; print(scipy.sparse.csr_matrix((1, 1)).shape)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "(1, 1)", done.stderr
