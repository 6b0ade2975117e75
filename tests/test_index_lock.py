"""The index write lock (IndexLock) and the build record check (check_build)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag_cli.config import Settings
from rag_cli.errors import ExitCode, IndexBusy, IndexMismatch
from rag_cli.index_dir import SCHEMA_VERSION, IndexLock, build_record, check_build

REPO_ROOT = Path(__file__).resolve().parents[1]

# A child process that takes the lock, says so, and holds it until it is killed.
HOLDER = """
import sys, time
from pathlib import Path
from rag_cli.index_dir import IndexLock
with IndexLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "lock"


def test_lock_writes_pid_and_clears_it(lock_path: Path) -> None:
    with IndexLock(lock_path) as lock:
        assert lock_path.read_text() == str(os.getpid())
        assert lock_path.stat().st_mode & 0o777 == 0o600
        assert isinstance(lock, IndexLock)
    assert lock_path.read_text() == ""
    with IndexLock(lock_path):  # it can be taken again after release
        pass


def test_second_lock_fails_fast_naming_the_pid(lock_path: Path) -> None:
    with IndexLock(lock_path):
        started = time.monotonic()
        with pytest.raises(IndexBusy) as info:
            with IndexLock(lock_path, timeout=0):
                pytest.fail("the second lock was granted while the first is held")
        assert time.monotonic() - started < 0.5
    err = info.value
    assert err.exit_code == ExitCode.BUSY == 7
    assert f"pid {os.getpid()}" in err.message
    assert str(lock_path.parent) in err.message
    assert err.hint is not None and "--wait" in err.hint


def test_timeout_expires(lock_path: Path) -> None:
    with IndexLock(lock_path):
        started = time.monotonic()
        with pytest.raises(IndexBusy):
            with IndexLock(lock_path, timeout=0.5):
                pass
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0


def test_waiter_gets_the_lock_once_released(lock_path: Path) -> None:
    first = IndexLock(lock_path).__enter__()
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.3)
        released.set()
        first.__exit__(None, None, None)

    notes: list[str] = []
    thread = threading.Thread(target=release_later)
    started = time.monotonic()
    thread.start()
    try:
        with IndexLock(lock_path, timeout=5, on_wait=notes.append):
            waited = time.monotonic() - started
            assert released.is_set()
            assert lock_path.read_text() == str(os.getpid())
    finally:
        thread.join()
    assert 0.25 <= waited < 3.0
    assert len(notes) == 1  # told once that it waits, not on every retry
    assert f"pid {os.getpid()}" in notes[0]


def test_lock_is_released_when_the_holder_is_killed(lock_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexBusy) as info:
            with IndexLock(lock_path, timeout=0):
                pass
        assert f"pid {child.pid}" in info.value.message
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert lock_path.read_text() == str(child.pid)  # a killed holder never cleaned up...
    with IndexLock(lock_path, timeout=0):  # ...and still the lock is free
        assert lock_path.read_text() == str(os.getpid())


# -- check_build ----------------------------------------------------------------------------------

def record(**changes) -> dict:
    settings = Settings()
    if changes:
        settings = settings.with_values(changes, "test")
    return build_record(settings, "sentence-transformers/all-MiniLM-L6-v2", 384, settings.chunking.size)


def test_build_record_holds_what_changes_vectors_or_chunks() -> None:
    rec = record()
    assert rec["schema_version"] == SCHEMA_VERSION
    assert rec["embedding.model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert rec["embedding.dimension"] == 384
    assert rec["chunking.size"] == 200
    for key in ("embedding.backend", "embedding.document_prefix", "embedding.query_prefix", "chunking.strategy",
                "chunking.overlap", "chunking.min_size", "chunking.context_header"):
        assert key in rec
    # batch size and device change neither vectors nor chunks
    assert record(**{"embedding.batch_size": 4, "embedding.device": "cuda"}) == rec


def test_identical_records_pass(tmp_path: Path) -> None:
    check_build(record(), record(), tmp_path)
    check_build(None, record(), tmp_path)  # a new index has no record yet
    check_build({}, record(), tmp_path)


@pytest.mark.parametrize(("recorded", "key"), [
    ({**record(), "embedding.model": "intfloat/e5-small-v2"}, "embedding.model"),
    (record(**{"chunking.size": 300}), "chunking.size"),
    (record(**{"chunking.strategy": "fixed"}), "chunking.strategy"),
    ({**record(), "embedding.dimension": 768}, "embedding.dimension"),
])
def test_mismatch_names_the_key_and_says_rebuild(tmp_path: Path, recorded: dict, key: str) -> None:
    with pytest.raises(IndexMismatch) as info:
        check_build(recorded, record(), tmp_path)
    err = info.value
    assert err.exit_code == ExitCode.INDEX == 4
    assert key in err.message
    assert repr(recorded[key]) in err.message and repr(record()[key]) in err.message
    assert str(tmp_path) in err.message
    assert err.hint is not None and "rag index --rebuild" in err.hint


def test_mismatch_lists_every_difference(tmp_path: Path) -> None:
    recorded = {**record(**{"chunking.size": 300}), "embedding.model": "other"}
    with pytest.raises(IndexMismatch) as info:
        check_build(recorded, record(), tmp_path)
    assert "chunking.size" in info.value.message and "embedding.model" in info.value.message


def test_schema_version_mismatch(tmp_path: Path) -> None:
    with pytest.raises(IndexMismatch) as info:
        check_build({**record(), "schema_version": SCHEMA_VERSION + 1}, record(), tmp_path)
    assert "schema version" in info.value.message
    assert info.value.hint is not None and "rag index --rebuild" in info.value.hint


# A child process inside the Chroma folder gate: says "in", holds the gate until told to go, says "out".
GATE_HOLDER = """
import sys
from pathlib import Path
from rag_cli.store.chroma import FolderGate
with FolderGate(Path(sys.argv[1])):
    print("in", flush=True)
    sys.stdin.readline()
    Path(sys.argv[2]).write_text("out")
"""


def gate_holder(gate: Path, marker: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", GATE_HOLDER, str(gate), str(marker)], cwd=REPO_ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "in"
    return child


def test_folder_gate_lets_one_process_in_at_a_time(tmp_path: Path) -> None:
    from rag_cli.store.chroma import FolderGate

    gate, marker = tmp_path / "chroma.lock", tmp_path / "marker"
    child = gate_holder(gate, marker)
    release = threading.Timer(0.3, lambda: (child.stdin.write("go\n"), child.stdin.flush()))
    release.start()
    with FolderGate(gate):  # waits for the child to leave
        assert marker.read_text() == "out"
    child.wait(30)
    release.join()


def test_folder_gate_names_the_lock_when_it_stays_busy(tmp_path: Path) -> None:
    from rag_cli.errors import StoreError
    from rag_cli.store.chroma import FolderGate

    gate = tmp_path / "chroma.lock"
    child = gate_holder(gate, tmp_path / "marker")
    try:
        with pytest.raises(StoreError) as info:
            with FolderGate(gate, timeout=0.2):
                pytest.fail("entered the gate while another process holds it")
        assert str(gate) in info.value.message and "busy" in info.value.message
    finally:
        child.stdin.write("go\n")
        child.stdin.close()
        child.wait(30)
    gate_again = FolderGate(gate, timeout=0.2)
    with gate_again, gate_again:  # free again, and re-entrant within a thread
        pass


def test_folder_gate_excludes_threads_of_one_process(tmp_path: Path) -> None:
    from rag_cli.store.chroma import FolderGate

    gate = FolderGate(tmp_path / "chroma.lock")
    inside, most = [0], [0]

    def visit() -> None:
        for _ in range(50):
            with gate:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.0005)
                inside[0] -= 1

    threads = [threading.Thread(target=visit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


def test_the_embedded_store_calls_chroma_through_the_gate(tmp_path: Path) -> None:
    """A query waits while another process holds `chroma.lock` beside the Chroma folder."""
    from rag_cli.store.chroma import ChromaStore

    store = ChromaStore(tmp_path / "chroma")
    gate, marker = tmp_path / "chroma.lock", tmp_path / "marker"
    assert gate.exists()
    child = gate_holder(gate, marker)
    release = threading.Timer(0.3, lambda: (child.stdin.write("go\n"), child.stdin.flush()))
    release.start()
    assert store.count() == 0
    assert marker.read_text() == "out"  # count() ran only after the child left the gate
    child.wait(30)
    release.join()


def test_a_dropped_gate_closes_its_descriptor(tmp_path: Path) -> None:
    from rag_cli.store.chroma import FolderGate

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    for _ in range(20):  # `rag serve` reopens the store each time the index changes
        with FolderGate(tmp_path / "chroma.lock"):
            pass
    assert open_descriptors() <= before + 1


WRITER = """
import sys
from pathlib import Path
from rag_cli.store.chroma import ChromaStore
store = ChromaStore(Path(sys.argv[1]))
store.upsert_raw([f"b{i}" for i in range(300)], [[0.5, float(i)] for i in range(300)], ["new"] * 300,
                 [{"n": i} for i in range(300)])
"""


def test_a_reader_sees_what_another_process_wrote_since_it_searched(tmp_path: Path) -> None:
    """Chroma re-reads its database on every call but keeps the HNSW index a process loaded
    first: after another process wrote, the new chunks had text and no vector here ("Error
    finding id") and dense search missed them. The folder's write count makes the store reopen."""
    from rag_cli.store.chroma import ChromaStore

    folder = tmp_path / "chroma"
    store = ChromaStore(folder)
    store.upsert_raw([f"a{i}" for i in range(10)], [[1.0, float(i)] for i in range(10)], ["old"] * 10,
                     [{"n": i} for i in range(10)])
    assert len(store.query([1.0, 0.0], 3)) == 3  # this process has loaded the HNSW index now
    subprocess.run([sys.executable, "-c", WRITER, str(folder)], cwd=REPO_ROOT, check=True, timeout=120)
    # a store opened now in this process gets Chroma's cached client for the folder, which is stale
    assert sorted(ChromaStore(folder).fetch(["b3"])) == ["b3"]
    assert store.count() == 310
    fetched = store.fetch(["b1", "b2"])
    assert sorted(fetched) == ["b1", "b2"] and fetched["b1"][0].text == "new"
    assert any(hit.chunk_id.startswith("b") for hit in store.query([0.5, 1.0], 5))
    again = store.fetch(["a1"])  # nothing written since: the same client, no reopening
    assert again["a1"][0].text == "old"


def test_the_gate_counts_writes(tmp_path: Path) -> None:
    from rag_cli.store.chroma import FolderGate

    gate = FolderGate(tmp_path / "chroma.lock")
    with gate:
        assert gate.generation() == 0
        assert gate.bump() == 1 and gate.bump() == 2
    other = FolderGate(tmp_path / "chroma.lock")  # another process's view of the same file
    with other:
        assert other.generation() == 2
