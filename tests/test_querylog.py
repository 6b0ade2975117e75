"""The query log (ask.log): rotation at the cap, whole lines from concurrent processes, the folder's
mode, stats on a hand-written log, export to a question file `rag eval` loads, one entry per
answer whoever answers it (in-process, `rag serve`, `rag mcp`) and none for `rag eval`; and the
round trip with the real models: `rag ask`, `rag log export`, `rag eval` on the export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_cli.api import Index
from rag_cli.config import load_settings
from rag_cli.evaluate.dataset import load_questions
from rag_cli.indexer import index_paths
from rag_cli.querylog import QueryLog, question_id, stats, summarise, to_questions
from tests.test_serve import HASH_TOML, QUESTION, thread_server

DAY = 86400.0


def entry(question: str, *, ts: float = 1000.0, seconds: float = 1.0, refused: bool = False, cached: bool = False,
          cited: tuple[str, ...] = ("guides/starter.md",), answer: str = "every 24 hours", **more: Any) -> dict:
    return {"schema": "rag-cli/query/v1", "ts": ts, "question": question, "where": [], "retrieved": [],
            "answer": "I don't know" if refused else answer, "cited": [] if refused else list(cited),
            "refused": refused, "refusal_reason": "low_score" if refused else None, "error": None,
            "cached": cached, "seconds": seconds, **more}


def private_folder(tmp_path: Path, mode: int = 0o700) -> Path:
    folder = tmp_path / ".rag"
    folder.mkdir(mode=mode)
    os.chmod(folder, mode)
    return folder


# -- the file ---------------------------------------------------------------------------------------

def test_past_the_cap_the_log_rotates_to_one_previous_file(tmp_path: Path) -> None:
    folder = private_folder(tmp_path)
    line_bytes = len(json.dumps(entry("q0000"), separators=(",", ":"))) + 1
    qlog = QueryLog(folder, max_bytes=line_bytes * 10)
    for i in range(25):
        qlog.append(entry(f"q{i:04d}", ts=float(i)))
    current = qlog.path.read_text().splitlines()
    previous = qlog.previous.read_text().splitlines()
    assert len(current) == 5 and len(previous) == 10  # rotated at 10 and at 20: the first ten are gone
    assert qlog.path.stat().st_size <= qlog.max_bytes and qlog.previous.stat().st_size <= qlog.max_bytes
    assert [e["question"] for e in qlog.entries()] == [f"q{i:04d}" for i in range(10, 25)]
    assert [e["question"] for e in qlog.entries(since=20.0)] == [f"q{i:04d}" for i in range(20, 25)]
    assert qlog.size() == qlog.path.stat().st_size + qlog.previous.stat().st_size
    assert qlog.clear() > 0 and qlog.entries() == [] and not qlog.previous.exists()


@pytest.mark.parametrize("mode", [0o700, 0o750])
def test_the_log_gets_the_folders_permissions(tmp_path: Path, mode: int) -> None:
    folder = private_folder(tmp_path, mode)
    QueryLog(folder).append(entry(QUESTION))
    assert (folder / "queries.jsonl").stat().st_mode & 0o777 == mode & 0o666


def test_a_torn_line_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    folder = private_folder(tmp_path)
    qlog = QueryLog(folder)
    qlog.append(entry("first"))
    with open(qlog.path, "a") as fh:  # a process killed in the middle of a line
        fh.write('{"question": "half')
    qlog.append(entry("second"))
    assert [e["question"] for e in qlog.entries()] == ["first", "second"]


def test_a_log_in_a_folder_the_user_cannot_write_is_read_and_not_cleared() -> None:
    """Another user's index (0755, owner's files 0644): stats and export read it without taking the
    lock; clear is a StoreError naming the folder, not a traceback."""

    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="rag-qlog-"))  # not under pytest's 0700 folder: `nobody` must reach it
    base.chmod(0o755)
    try:
        _read_only_log(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _read_only_log(base: Path) -> None:
    from indexing_helpers import as_nobody
    from rag_cli.errors import StoreError

    folder = private_folder(base, 0o755)
    qlog = QueryLog(folder)
    qlog.append(entry("first"))
    qlog.lock.unlink()  # as if the owner's last writer had never left one

    def read_and_clear() -> dict:
        other = QueryLog(folder)
        read = [e["question"] for e in other.entries()]
        try:
            other.clear()
            cleared = "cleared"
        except StoreError as exc:
            cleared = str(exc)
        return {"read": read, "cleared": cleared, "writable": os.access(folder, os.W_OK)}

    got = as_nobody(read_and_clear, "to read a log in a folder it cannot write")
    if got["writable"]:
        pytest.skip("the folder is writable for this user")
    assert got["read"] == ["first"]
    assert "cannot be cleared" in got["cleared"] and str(folder) in got["cleared"]
    assert qlog.path.exists()


WRITER = """
import sys
from rag_cli.querylog import QueryLog
qlog = QueryLog(sys.argv[1], max_bytes=int(sys.argv[2]))
name = sys.argv[3]
for i in range(int(sys.argv[4])):
    qlog.append({"question": f"{name} {i} " + name * 9000, "ts": i, "who": name})
"""


@pytest.mark.parametrize("cap_mb", [64, 1])
def test_two_processes_appending_leave_only_whole_lines(tmp_path: Path, cap_mb: int) -> None:
    """Lines of 9 kB (more than one pipe buffer, so nothing but the lock keeps them whole), from two
    processes at once; with a 1 MB cap the log rotates while they write."""
    folder = private_folder(tmp_path)
    count = 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(cap_mb * 1024 * 1024), name,
                               str(count)], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    qlog = QueryLog(folder)
    lines = [line for path in (qlog.previous, qlog.path) if path.exists() for line in path.read_bytes().splitlines()]
    rows = [json.loads(line) for line in lines]  # a torn or interleaved line would not parse
    for name in ("a", "b"):
        mine = [r for r in rows if r["who"] == name]
        assert all(r["question"] == f"{name} {r['ts']} " + name * 9000 for r in mine)
        assert [r["ts"] for r in mine] == sorted(r["ts"] for r in mine)  # each writer's order kept
        if cap_mb == 64:
            assert len(mine) == count
    if cap_mb == 1:
        assert qlog.previous.exists() and 0 < len(rows) < 2 * count


# -- stats and export ---------------------------------------------------------------------------------

def test_stats_of_a_hand_written_log(tmp_path: Path) -> None:
    folder = private_folder(tmp_path)
    now = 100 * DAY
    lines = [entry("How often should I feed my starter?", ts=now - 1000, seconds=1.0),
             entry("how often should I feed my  starter", ts=now - 900, seconds=2.0, cached=True),
             entry("HOW OFTEN SHOULD I FEED MY STARTER?!", ts=now - 800, seconds=3.0, cached=True),
             entry("What oven temperature?", ts=now - 700, seconds=4.0),
             entry("What is the capital of Mongolia?", ts=now - 600, seconds=5.0, refused=True),
             entry("What oven temperature", ts=now - 500, seconds=6.0),
             entry("Who wrote the glossary?", ts=now - 400, seconds=7.0, refused=True),
             entry("An old question", ts=now - 40 * DAY, seconds=100.0)]  # outside --days 30
    (folder / "queries.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (tmp_path / ".rag.toml").write_text("[ask]\nlog = true\n")
    st = stats(load_settings(tmp_path, env={}), days=30, now=now)
    assert st.enabled and st.questions == 7 and st.refused == 2 and st.cached == 2 and st.errors == 0
    assert st.refusal_rate == pytest.approx(2 / 7) and st.cache_hit_share == pytest.approx(2 / 7)
    # seconds 1..7: p50 the 4th; p90 at rank 6 * 0.9 = 5.4 -> 6 + 0.4; p99 at 5.94 -> 6.94
    assert st.latency == pytest.approx({"p50": 4.0, "p90": 6.4, "p99": 6.94})
    assert st.refusal_reasons == {"low_score": 2}
    assert st.top[:2] == (("HOW OFTEN SHOULD I FEED MY STARTER?!", 3), ("What oven temperature", 2))
    assert st.first == now - 1000 and st.last == now - 400
    assert json.loads(json.dumps(st.to_dict()))["top"][0] == {"question": "HOW OFTEN SHOULD I FEED MY STARTER?!",
                                                              "count": 3}
    assert summarise([]).questions == 0 and summarise([]).latency == {"p50": None, "p90": None, "p99": None}


def test_export_merges_repeats_and_leaves_refusals_to_the_flag(tmp_path: Path) -> None:
    rows = [entry("How often should I feed my starter?", ts=1.0, answer="daily"),
            entry("how often should I feed my starter", ts=2.0, answer="every 24 hours"),
            entry("What is the capital of Mongolia?", ts=3.0, refused=True),
            entry("Which flour?", ts=4.0, cited=("faq.txt", "faq.txt", "guides/starter.md"), where=["path=faq.txt"]),
            entry("Broken?", ts=5.0, error="the model failed")]
    plain = to_questions(rows)
    assert [r["question"] for r in plain.rows] == ["how often should I feed my starter", "Which flour?"]
    assert plain.merged == 1 and plain.refused_left_out == 1 and plain.errors_left_out == 1
    first, flour = plain.rows
    assert first["answers"] == ["every 24 hours"] and first["asked"] == 2 and first["answerable"] is True
    assert first["id"] == question_id("How often should I feed my starter?")  # the same id for each wording
    assert flour["relevant"] == ["faq.txt", "guides/starter.md"] and flour["where"] == ["path=faq.txt"]
    full = to_questions(rows, include_refused=True)
    refused = next(r for r in full.rows if r["question"].startswith("What is the capital"))
    assert refused["answerable"] is False and refused["answers"] == [] and refused["relevant"] == []
    out = tmp_path / "q.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in full.rows))
    loaded = load_questions(out)  # the question-file reader takes the export unchanged
    assert [(q.qid, q.question, q.answers, q.relevant, q.answerable) for q in loaded] == \
        [(r["id"], r["question"], tuple(r["answers"]), tuple(r["relevant"]), r["answerable"]) for r in full.rows]


# -- who logs: once per answer, never for rag eval -------------------------------------------------------

@pytest.fixture
def logging_workdir(tmp_path: Path, samples: Path) -> Path:
    (tmp_path / ".rag.toml").write_text(HASH_TOML.replace("[ask]\n", "[ask]\nlog = true\n"))
    index_paths(load_settings(tmp_path, env={}), [samples])
    return tmp_path


def logged(workdir: Path) -> list[dict]:
    return QueryLog(workdir / ".rag").entries()


def test_each_answer_is_logged_once_wherever_it_is_answered_and_eval_is_not(logging_workdir: Path,
                                                                             tmp_path: Path) -> None:
    from rag_cli.mcp_server import Tools

    settings = load_settings(logging_workdir, env={})
    questions_file = tmp_path / "eval.jsonl"
    questions_file.write_text(json.dumps({"id": "1", "question": "What temperature should the oven be?"}) + "\n")
    with thread_server(settings) as server:
        asked = Index(settings).ask(QUESTION, use_cache=False)
        assert asked.served_by == os.getpid()  # the server on a thread of this process answered
        assert len(logged(logging_workdir)) == 1  # by the server, not again by the client
        evaluated = Index(settings).evaluate(load_questions(questions_file))
        assert evaluated.served_by is not None and len(logged(logging_workdir)) == 1
        Tools(settings, backend=server.backend).ask("What flour should I use?")
        assert len(logged(logging_workdir)) == 2  # rag mcp's ask tool
    Index(settings, serve=False).evaluate(load_questions(questions_file))  # in-process eval: not logged either
    again = Index(settings, serve=False).ask(QUESTION, where=["path=guides/*"])  # in-process, then cached
    cached = Index(settings, serve=False).ask(QUESTION, where=["path=guides/*"])
    Index(settings, serve=False).ask(QUESTION, retrieve_only=True)  # a search, not an answer: not logged
    assert not again.answer.cached and cached.answer.cached
    entries = logged(logging_workdir)
    assert [e["question"] for e in entries] == [QUESTION, "What flour should I use?", QUESTION, QUESTION]
    assert [e["cached"] for e in entries] == [False, False, False, True]
    assert entries[2]["where"] == ["path=guides/*"] and entries[2]["retrieved"]
    first = entries[0]
    assert first["answer"] == asked.answer.answer and first["cited"] and first["seconds"] > 0
    assert {r["chunk_id"] for r in first["retrieved"]} == {p["chunk_id"] for p in asked.answer.passages}
    status = Index(settings).status().to_dict()["query_log"]
    assert status["enabled"] and status["size_bytes"] == QueryLog(logging_workdir / ".rag").size()


def test_with_the_log_off_nothing_is_written(logging_workdir: Path) -> None:
    settings = load_settings(logging_workdir, env={}, flags={"ask.log": False})
    Index(settings, serve=False).ask(QUESTION)
    assert not (logging_workdir / ".rag" / "queries.jsonl").exists()
    assert Index(settings).status().to_dict()["query_log"]["enabled"] is False


# -- the round trip, with the real models and the installed `rag` -------------------------------------

@pytest.mark.slow
def test_the_log_round_trips_into_a_question_file_rag_eval_runs(tmp_path: Path, samples: Path,
                                                                 real_embedder) -> None:
    workdir = tmp_path
    (workdir / ".rag.toml").write_text("[ask]\nlog = true\n")
    index_paths(load_settings(workdir, env={}), [samples], embedder=real_embedder)
    rag = Path(sys.executable).with_name("rag")  # the installed command
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(rag), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)

    answered = run("ask", QUESTION, "--json")
    refused = run("ask", "What is the capital of Mongolia?")
    assert answered.returncode == 0 and refused.returncode == 6, (answered.stderr, refused.stderr)
    answer = json.loads(answered.stdout)
    logged_before = QueryLog(workdir / ".rag").entries()
    assert [e["refused"] for e in logged_before] == [False, True]

    exported = run("log", "export", "-o", "questions.jsonl", "--include-refused")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in (workdir / "questions.jsonl").read_text().splitlines()]
    assert rows[0]["question"] == QUESTION and rows[0]["answers"] == [answer["answer"]]
    assert rows[0]["relevant"] == list(dict.fromkeys(c["doc_id"] for c in answer["citations"]))
    assert rows[1]["answerable"] is False

    evaluated = run("eval", "questions.jsonl", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    reports = report.get("reports", [report])
    assert reports[0]["counts"]["questions"] == 2, report
    assert QueryLog(workdir / ".rag").entries() == logged_before  # eval's questions are not logged

    st = run("log", "stats", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["questions"] == 2 and json.loads(st.stdout)["refused"] == 1
