"""`rag index` through the command line: exit codes, output shapes, locks and kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_cli.errors import ExitCode
from rag_cli.index_dir import IndexLock, IndexPaths
from tests.indexing_helpers import index_state, invoke as run, settings_in

pytestmark = pytest.mark.slow


def test_json_summary_shape(tmp_path: Path, samples: Path) -> None:
    result = run(["index", str(samples), "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "rag-cli/index-report/v1"
    assert set(report) >= {"index", "files", "chunks", "seconds", "timings", "problems", "details"}
    assert report["files"]["added"] == 6 and report["files"]["failed"] == 0
    assert report["chunks"]["total"] == report["chunks"]["written"] > 0
    again = json.loads(run(["index", str(samples), "--json"], tmp_path).stdout)
    assert again["files"]["unchanged"] == 6 and again["chunks"]["written"] == 0


def test_bad_input_folder_exit_code_and_warnings(tmp_path: Path) -> None:
    docs = tmp_path / "bad"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThis note is fine and mentions rye flour.\n")
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    (docs / "binary.md").write_bytes(b"\x00\x01\x02PNG\x00" * 100)
    (docs / "latin1.txt").write_bytes("Crème brûlée is not bread.".encode("latin-1"))
    (docs / "empty.txt").write_bytes(b"")
    result = run(["index", str(docs)], tmp_path)
    assert result.exit_code == ExitCode.PARTIAL, result.output
    err = result.stderr
    assert "corrupt.pdf" in err and "binary.md" in err and "binary file" in err
    assert "latin1.txt" in err and "empty.txt" in err
    assert "2 file(s) with problems" in result.stdout
    report = json.loads(run(["index", str(docs), "--json"], tmp_path).stdout)
    assert report["files"]["unchanged"] == 2 and report["files"]["failed"] == 2
    assert report["files"]["skipped"] == 1


def test_records_lost_on_the_way_in_are_reported_on_every_run(tmp_path: Path) -> None:
    """Same input, same warnings, same exit code: an unchanged JSONL file with a bad line is
    reported again (from the manifest, without being read), as an unchanged failed file is."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.jsonl").write_text('{"id": "a", "text": "Rye ferments fast."}\n{"id": "b", "text": \n')
    first = run(["index", str(docs)], tmp_path)
    assert first.exit_code == ExitCode.PARTIAL, first.output
    warning = next(line for line in first.stderr.splitlines() if "notes.jsonl" in line)
    assert "line 2" in warning
    again = run(["index", str(docs)], tmp_path)  # not read at all
    assert again.exit_code == ExitCode.PARTIAL, again.output
    assert "1 file(s) with problems" in again.stdout and warning.split("notes.jsonl")[1] in again.stdout
    os.utime(docs / "notes.jsonl")  # read again, hashed, found unchanged
    report = json.loads(run(["index", str(docs), "--json"], tmp_path).stdout)
    assert report["files"]["unchanged"] == 1 and report["chunks"]["written"] == 0
    (problem,) = report["problems"]
    assert problem["path"].endswith("notes.jsonl") and "line 2" in " ".join(problem["warnings"])


def test_second_run_is_refused_while_the_lock_is_held(tmp_path: Path, samples: Path) -> None:
    paths = IndexPaths(tmp_path / ".rag")
    paths.create()
    with IndexLock(paths.lock):
        result = run(["index", str(samples)], tmp_path)
    assert result.exit_code == ExitCode.BUSY
    assert "another `rag index`" in result.stderr and str(os.getpid()) in result.stderr


def test_mismatch_exit_code_and_hint(tmp_path: Path, samples: Path) -> None:
    assert run(["index", str(samples)], tmp_path).exit_code == 0
    result = run(["index", str(samples), "--size", "90"], tmp_path)
    assert result.exit_code == ExitCode.INDEX
    assert "chunking.size" in result.stderr and "rag index --rebuild" in result.stderr
    assert run(["index", str(samples), "--size", "90", "--rebuild"], tmp_path).exit_code == 0


def test_unknown_path_is_a_usage_error(tmp_path: Path) -> None:
    result = run(["index", str(tmp_path / "nope")], tmp_path)
    assert result.exit_code == ExitCode.USAGE and "nope" in result.stderr


def _many_docs(folder: Path, count: int) -> None:
    folder.mkdir()
    words = "flour water salt starter levain crumb crust oven steam rye wheat spelt".split()
    for i in range(count):
        paras = [" ".join(words[(i + j + k) % len(words)] for k in range(40)) + "." for j in range(12)]
        (folder / f"note-{i:03d}.md").write_text(f"# Note {i}\n\n" + "\n\n".join(paras) + "\n")


def _rag(args: list[str], cwd: Path, *failpoints: str) -> subprocess.Popen:
    env = {**os.environ, "RAG_EMBEDDING_BACKEND": "hash", "HF_HUB_OFFLINE": "1"}
    command = ["-m", "rag_cli.testing.failpoints", *failpoints, "--"] if failpoints else ["-m", "rag_cli"]
    return subprocess.Popen([sys.executable, *command, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_runs_leave_a_consistent_index_that_the_next_run_completes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _many_docs(docs, 150)
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    assert _rag(["index", str(docs)], clean_dir).wait(120) == 0
    clean = index_state(settings_in(clean_dir))

    work = tmp_path / "work"
    work.mkdir()
    for delay in (0.6, 1.2, 1.8, 2.6, 3.4):
        proc = _rag(["index", str(docs)], work)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if (work / ".rag" / "manifest.sqlite3").exists():
            index_state(settings_in(work), complete=False)  # opens; the manifest knows every stored chunk
    proc = _rag(["index", str(docs)], work)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert index_state(settings_in(work)) == clean
    from rag_cli.store.keyword import KeywordIndex

    keyword = KeywordIndex.load(IndexPaths(work / ".rag").keyword)
    assert keyword is not None and set(keyword.ids) == set(clean)  # no orphan in the keyword index


def test_ctrl_c_exits_130_and_the_next_run_completes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _many_docs(docs, 150)
    # Ctrl-C's SIGINT as the first batch of chunks has been written: mid-run, at the same point every time.
    proc = _rag(["index", str(docs)], tmp_path, "rag_cli.store.chroma:ChromaStore.upsert_raw:1:after:SIGINT")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err.decode()
    assert b"interrupted" in err
    assert index_state(settings_in(tmp_path), complete=False)  # the first batch was kept
    finish = _rag(["index", str(docs)], tmp_path)
    assert finish.wait(120) == 0
    state = index_state(settings_in(tmp_path))
    assert {k.split("::")[0] for k in state} == {f"note-{i:03d}.md" for i in range(150)}


def test_installed_command_in_a_pipe(tmp_path: Path, samples: Path) -> None:
    """The real `rag` console script, piped: plain text, no terminal codes."""
    rag = Path(sys.executable).with_name("rag")
    if not rag.exists():
        pytest.skip("the rag console script is not installed next to this Python")
    env = {**os.environ, "RAG_EMBEDDING_BACKEND": "hash"}
    done = subprocess.run([str(rag), "index", str(samples)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Indexed 6 files into .rag")
    assert "\x1b[" not in done.stdout and "\x1b[" not in done.stderr
