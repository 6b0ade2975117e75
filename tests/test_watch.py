"""`rag index --watch`, `rag serve --watch`, `--idle-timeout` and `--detach`.

The Watcher tests run it on a thread over real file system events (watchfiles/inotify) on a copy
of the samples, with the fast hash embedder (one with the bundled MiniLM); the batching test feeds
it a scripted event source and clock. The CLI tests run the installed command as a process.
Nothing is timed: every wait is for a condition, with a generous limit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rag_cli.api import Index
from rag_cli.cli.options import parse_duration
from rag_cli.config import Settings, load_settings
from rag_cli.errors import ConfigError
from rag_cli.indexer import index_paths
from rag_cli.models import FileStatus
from rag_cli.serve import client
from rag_cli.watch import ADDED, DELETED, MODIFIED, WatchBatch, Watcher
from tests.indexing_helpers import index_state
from tests.test_serve import HASH_TOML, RAG, process_env, start_serve

WAIT = 60.0  # seconds: generous limits for conditions, never an assertion on speed


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def workdir(tmp_path: Path, samples: Path) -> Path:
    (tmp_path / ".rag.toml").write_text(HASH_TOML)
    index_paths(load_settings(tmp_path, env={}), [samples])
    return tmp_path


def settings_of(workdir: Path) -> Settings:
    return load_settings(workdir, env={})


def texts_for(settings: Settings, question: str, k: int = 5) -> list[str]:
    return [h.text for h in Index(settings, serve=False).search(question, k=k)]


def found(settings: Settings, phrase: str) -> bool:
    return any(phrase in text for text in texts_for(settings, phrase))


@contextmanager
def watching(settings: Settings, roots: list[Path] | None = None, **kwargs: Any) -> Iterator[tuple[Watcher, list]]:
    batches: list[WatchBatch] = []
    warnings: list[str] = []
    watcher = Watcher(settings, roots, on_batch=batches.append, on_warning=warnings.append, **kwargs)
    watcher.start()
    time.sleep(0.5)  # the inotify watches are set up on the thread
    try:
        yield watcher, [batches, warnings]
    finally:
        assert watcher.stop(WAIT)


def test_saving_a_file_makes_its_new_text_searchable_and_deleting_removes_it(workdir: Path, samples: Path) -> None:
    settings = settings_of(workdir)
    with watching(settings) as (watcher, (batches, _)):
        (samples / "new-note.md").write_text("# Kayaks\n\nThe quokka paddles a vermilion kayak on Tuesdays.\n")
        wait_for(lambda: found(settings, "vermilion kayak"), "the new text to be searchable")
        target = samples / "new-note.md"
        target.unlink()
        wait_for(lambda: not found(settings, "vermilion kayak"), "the deleted file's chunks to go")
        assert not any("new-note.md" in cid for cid in index_state(settings))
    assert any(b.count(FileStatus.ADDED) for b in batches) and any(b.count(FileStatus.REMOVED) for b in batches)


def test_a_file_with_the_relative_path_of_another_roots_file_gets_its_own_id(workdir: Path, samples: Path) -> None:
    settings = settings_of(workdir)
    other = workdir / "other"
    other.mkdir()
    index_paths(settings, [other])  # an empty second root, watched beside the samples
    before = index_state(settings)
    with watching(settings) as _:
        (other / "README.md").write_text("# Other\n\nThe axolotl collects cobalt thimbles.\n")
        wait_for(lambda: found(settings, "cobalt thimbles"), "the second README to be searchable")
        assert set(index_state(settings)) - set(before) == {"other/README.md::0"}
        (other / "README.md").unlink()
        wait_for(lambda: not found(settings, "cobalt thimbles"), "the second README's chunks to go")
    assert index_state(settings) == before  # the samples' README.md kept its id and its chunks


def test_an_editor_save_through_a_temporary_file_and_a_rename(workdir: Path, samples: Path) -> None:
    settings = settings_of(workdir)
    note = next(p for p in sorted(samples.rglob("*.md")))
    with watching(settings) as (_, (batches, _)):
        # vim-style: a swap file and a backup (names the walker ignores), the new text written to a
        # temporary file, renamed over the original.
        (note.parent / f".{note.name}.swp").write_bytes(b"\0swap")
        shutil.copy(note, note.parent / f"{note.name}~")
        tmp = note.parent / f"{note.name}.tmp4913"
        tmp.write_text(note.read_text() + "\n\nThe ocelot recites saffron limericks.\n")
        os.replace(tmp, note)
        (note.parent / f".{note.name}.swp").unlink()
        (note.parent / f"{note.name}~").unlink()
        wait_for(lambda: found(settings, "saffron limericks"), "the saved text to be searchable")
    files = Index(settings, serve=False).status()
    assert files.files["total"] == len([p for p in samples.rglob("*") if p.is_file()])  # no temporary file
    assert all(b.count(FileStatus.ADDED) == 0 for b in batches), "the temporary or backup file was indexed"


def test_a_burst_of_1000_files_is_indexed_in_a_few_batches(workdir: Path, samples: Path) -> None:
    settings = settings_of(workdir)
    with watching(settings) as (watcher, (batches, _)):
        burst = samples / "burst"
        burst.mkdir()
        for i in range(1000):
            (burst / f"note-{i:04d}.txt").write_text(f"Note {i} about the tapir number {i}.\n")
        wait_for(lambda: sum(b.count(FileStatus.ADDED) for b in batches) >= 1000, "the 1000 files")
    assert 1 <= watcher.batches <= 5, [b.summary() for b in batches]
    assert (Index(settings, serve=False).status().files["total"] or 0) >= 1000


def test_a_file_that_turns_bad_keeps_its_old_chunks_with_a_warning(workdir: Path, samples: Path) -> None:
    settings = settings_of(workdir)
    note = samples / "plain-words.txt"
    note.write_text("The pangolin hoards turquoise buttons.\n")
    index_paths(settings, [samples])
    before = {cid for cid in index_state(settings) if "plain-words.txt" in cid}
    assert before
    with watching(settings) as (_, (batches, warnings)):
        note.write_bytes(b"\x00\x01\x02 binary \xff\xfe" * 50)
        wait_for(lambda: any(b.count(FileStatus.FAILED) for b in batches), "the failed batch")
    assert any("plain-words.txt" in w and "kept" in w for w in warnings), warnings
    assert before <= set(index_state(settings))
    assert found(settings, "turquoise buttons")


@pytest.mark.parametrize("how", ["delete", "rename"])
def test_a_watched_folder_that_goes_is_dropped_and_the_others_stay_watched(tmp_path: Path, how: str) -> None:
    (tmp_path / ".rag.toml").write_text(HASH_TOML)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, word in ((first, "heron"), (second, "walrus")):
        folder.mkdir()
        (folder / f"{word}.md").write_text(f"The {word} waits.\n")
    settings = settings_of(tmp_path)
    index_paths(settings, [first, second])
    with watching(settings, gone_after=0.3) as (watcher, (batches, warnings)):
        shutil.rmtree(first) if how == "delete" else first.rename(tmp_path / "moved")
        wait_for(lambda: any("no longer watched" in w for w in warnings), "the warning")
        (second / "b.md").write_text("The narwhal juggles amber teacups.\n")
        wait_for(lambda: found(settings, "amber teacups"), "a change in the folder still watched")
        assert watcher._thread is not None and watcher._thread.is_alive()
        shutil.rmtree(second)
        wait_for(lambda: not watcher._thread.is_alive(), "the watcher to stop with nothing left")  # type: ignore[union-attr]
    assert watcher.stop_reason == "nothing left to watch"
    assert found(settings, "The heron waits")  # a root that is gone keeps its chunks, as `rag index` keeps them


def test_batching_follows_the_debounce_with_a_scripted_clock(workdir: Path, samples: Path) -> None:
    """Changes closer together than the debounce make one batch; ignored names make none."""
    settings = settings_of(workdir)
    now = [0.0]
    note, other = str(samples / "x.md"), str(samples / "y.md")
    script: list[tuple[float, set]] = [
        (0.0, {(ADDED, note)}), (0.1, {(MODIFIED, note)}), (0.2, {(ADDED, other)}), (0.3, set()), (0.45, set()),
        (1.0, {(ADDED, str(samples / ".x.md.swp")), (ADDED, str(samples / "x.md~")),
               (ADDED, str(settings.index_dir / "chroma" / "data.md"))}), (2.0, set()),
        (3.0, {(DELETED, note)}), (3.5, set()),
    ]

    def events(_folders: Any, stop: threading.Event) -> Iterator[set]:
        for at, changes in script:
            now[0] = at
            yield changes
        stop.set()

    (samples / "x.md").write_text("The okapi.\n")
    (samples / "y.md").write_text("The gecko.\n")
    batches: list[WatchBatch] = []
    watcher = Watcher(settings, events=events, clock=lambda: now[0], debounce=0.25, on_batch=batches.append)
    assert watcher.run(threading.Event()) == "stopped"
    assert [b.changes for b in batches] == [2, 1]  # x.md and y.md; then the deletion (x.md is still there)
    assert batches[0].count(FileStatus.ADDED) == 2


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "2h", "1h30m", "45", "0.5s")] == [90, 1800, 7200, 5400, 45, 0.5]
    for bad in ("", "soon", "5 parsecs", "-3s", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_with_the_real_model_a_saved_file_is_found(tmp_path: Path, samples: Path, real_embedder: Any) -> None:
    settings = load_settings(tmp_path, env={})
    index_paths(settings, [samples], embedder=real_embedder)
    with watching(settings, embedder=real_embedder):
        (samples / "bees.md").write_text("# Beekeeping\n\nBumblebees overwinter as solitary queens in loose soil.\n")

        def hit() -> bool:
            index = Index(settings, serve=False, embedder=real_embedder)
            return any("solitary queens" in h.text for h in index.search("Where do bumblebee queens spend the winter?"))

        wait_for(hit, "the new text to be found by meaning")


# -- the command line ---------------------------------------------------------------------------------------------
def test_sigterm_stops_rag_index_watch_cleanly(workdir: Path, samples: Path) -> None:
    proc = subprocess.Popen([*RAG, "index", str(samples), "--watch", "--json"], cwd=workdir, env=process_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["schema"] == "rag-cli/index-report/v1"
        time.sleep(0.5)
        (samples / "iguana.md").write_text("The iguana sunbathes on slate.\n")
        batch = json.loads(proc.stdout.readline())
        assert batch["schema"] == "rag-cli/watch-batch/v1" and batch["files"]["added"] == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert "stopped after 1 batch" in err
    status = subprocess.run([*RAG, "status", "--json"], cwd=workdir, env=process_env(), capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout)["files"]["total"] >= 7
    index_state(settings_of(workdir))  # nothing pending, the manifest and the store agree
    assert found(settings_of(workdir), "sunbathes on slate")


def test_rag_serve_watch_answers_follow_an_edited_file(workdir: Path, samples: Path) -> None:
    proc = start_serve(workdir, "--no-llm", "--watch")
    try:
        def served(question: str) -> str:
            out = subprocess.run([*RAG, "-v", "ask", question, "--retrieve-only", "--json"], cwd=workdir,
                                 env=process_env(), capture_output=True, text=True)
            assert out.returncode == 0 and "answered by rag serve" in out.stderr, out.stderr
            return " ".join(passage["text"] for passage in json.loads(out.stdout)["passages"])

        time.sleep(1)  # the watcher's catch-up run (nothing to do)
        assert "cobalt pebbles" not in served("cobalt pebbles")
        (samples / "lemur.md").write_text("The lemur collects cobalt pebbles.\n")
        wait_for(lambda: "cobalt pebbles" in served("cobalt pebbles"), "the served answer to follow the file")
        assert client.status(settings_of(workdir)).details.get("index_reopened", 0) >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0 and "indexed batch" in err, err


def test_rag_serve_idle_timeout_stops_the_server(workdir: Path) -> None:
    proc = start_serve(workdir, "--no-llm", "--idle-timeout", "2s")
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0 and "--idle-timeout" in err, err
    assert client.status(settings_of(workdir)).state == client.ServeState.NOT_RUNNING


def test_rag_serve_detach_starts_one_that_stop_stops(workdir: Path) -> None:
    out = subprocess.run([*RAG, "serve", "--detach", "--no-llm", "--json"], cwd=workdir, env=process_env(),
                         capture_output=True, text=True, timeout=WAIT * 3)
    assert out.returncode == 0, out.stderr
    started = json.loads(out.stdout)
    settings = settings_of(workdir)
    try:
        st = client.status(settings)
        assert st.ready and st.pid == started["pid"]
        assert Path(started["log"]).stat().st_mode & 0o077 == 0
    finally:
        stopped = subprocess.run([*RAG, "serve", "--stop"], cwd=workdir, env=process_env(), capture_output=True,
                                 text=True)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: client.status(settings).state == client.ServeState.NOT_RUNNING, "the server to stop")


def test_rag_serve_detach_reports_a_server_that_cannot_start(tmp_path: Path, workdir: Path) -> None:
    first = start_serve(workdir, "--no-llm")
    try:
        out = subprocess.run([*RAG, "serve", "--detach", "--no-llm"], cwd=workdir, env=process_env(),
                             capture_output=True, text=True, timeout=WAIT * 3)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=WAIT)
    assert out.returncode == 7 and "another `rag serve`" in out.stderr, out.stderr
