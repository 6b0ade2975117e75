"""The indexing pipeline's moving parts: the bounded reader queue, files written in parts,
batches of similar length, and a re-run that never opens the vector store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rag_cli.indexer as indexer
from rag_cli.index_dir import IndexPaths
from rag_cli.indexer import index_paths
from rag_cli.ingest.chunkers import StructureChunker
from rag_cli.ingest.readahead import Channel
from rag_cli.models import FileStatus
from rag_cli.store.chroma import ChromaStore
from rag_cli.store.keyword import KeywordIndex
from rag_cli.testing.fakes import HashEmbedder
from tests.indexing_helpers import index_state, settings_in

WORDS = "flour water salt starter levain crumb crust oven steam rye wheat spelt proof knead bake".split()


def corpus(path: Path, records: int) -> Path:
    """A JSONL corpus whose records make one to four chunks each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(records):
            words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(60 + 150 * (i % 4))]
            f.write(json.dumps({"id": f"r{i}", "title": f"Record {i}", "text": " ".join(words) + "."}) + "\n")
    return path


class RecordingEmbedder:
    """Wraps an embedder; remembers each call's texts, and optionally an event log."""

    def __init__(self, inner, events: list | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.calls: list[list[str]] = []
        self.events = events

    def embed_documents(self, texts):
        self.calls.append(list(texts))
        if self.events is not None:
            self.events.append("embed")
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)

    @property
    def loaded(self):
        return self.inner.loaded

    def warm_up(self):
        self.inner.warm_up()


def stored(settings) -> dict[str, tuple[str, dict]]:
    got = ChromaStore(IndexPaths(settings.index_dir).chroma)._collection.get(include=["documents", "metadatas"])
    return {cid: (doc, meta) for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])}


# -- the reader's queue -------------------------------------------------------------------------

def test_the_reader_queue_is_bounded_by_chunks() -> None:
    channel = Channel(max_chunks=10, max_parts=100)
    assert channel.put("a", 6) and channel.put("b", 4)
    done = threading.Event()
    threading.Thread(target=lambda: (channel.put("c", 1), done.set()), daemon=True).start()
    assert not done.wait(0.3)  # full: the reader waits
    assert channel.get() == "a"
    assert done.wait(5)
    assert channel.get() == "b" and channel.get() == "c" and not channel.ready()
    assert channel.put("huge", 50)  # bigger than the bound, but the queue is empty
    assert channel.get() == "huge"


def test_a_closed_queue_releases_the_waiting_reader() -> None:
    channel = Channel(max_chunks=1, max_parts=1)
    assert channel.put("a", 1)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(channel.put("b", 1)), daemon=True)
    waiter.start()
    time.sleep(0.1)
    channel.close()
    waiter.join(5)
    assert result == [False]


# -- files in parts ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_corpus_file_written_in_parts_gives_the_same_index(tmp_path: Path, monkeypatch) -> None:
    data = corpus(tmp_path / "docs" / "corpus.jsonl", 40)
    whole = settings_in(tmp_path / "whole", embedding__backend="hash")
    (tmp_path / "whole").mkdir()
    index_paths(whole, [data.parent])

    # Tiny parts, groups and read-ahead: the writer embeds the first records while the reader
    # is still cutting the last ones.
    monkeypatch.setattr(indexer, "PART_CHUNKS", 5)
    monkeypatch.setattr(indexer, "GROUP_CHUNKS", 12)
    monkeypatch.setattr(indexer, "READ_AHEAD_CHUNKS", 10)
    events: list[str] = []
    real_chunk = StructureChunker.chunk
    monkeypatch.setattr(StructureChunker, "chunk", lambda self, doc: events.append("cut") or real_chunk(self, doc))
    parts = settings_in(tmp_path / "parts", embedding__backend="hash")
    (tmp_path / "parts").mkdir()
    embedder = RecordingEmbedder(HashEmbedder(), events)
    report = index_paths(parts, [data.parent], embedder=embedder)

    assert events.index("embed") < len(events) - 1 - events[::-1].index("cut")  # overlapped
    assert [(f.status, f.documents, f.chunks) for f in report.files] == [(FileStatus.ADDED, 40, report.chunks_total)]
    assert index_state(parts) == index_state(whole)
    assert stored(parts) == stored(whole)  # same ids, texts and metadata

    # An edit rewrites the file in parts again: only changed chunks are embedded, none is left over.
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:30] + [lines[30].replace("Record 30", "Record thirty")]) + "\n")
    embedder.calls.clear()
    report = index_paths(parts, [data.parent], embedder=embedder)
    assert report.count(FileStatus.UPDATED) == 1 and report.chunks_deleted > 0
    assert sum(len(c) for c in embedder.calls) == report.chunks_written > 0
    assert {k.split("::")[0] for k in index_state(parts)} == {f"r{i}" for i in range(31)}


@pytest.mark.slow
def test_one_record_that_cannot_be_cut_is_dropped_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    data = corpus(tmp_path / "docs" / "corpus.jsonl", 6)
    (tmp_path / "docs" / "note.md").write_text("# Note\n\nA single document that the chunker fails on.\n")
    real_chunk = StructureChunker.chunk

    def chunk(self, doc):
        if doc.doc_id in ("r2", "note.md"):
            raise ValueError("boom")
        return real_chunk(self, doc)

    monkeypatch.setattr(StructureChunker, "chunk", chunk)
    settings = settings_in(tmp_path, embedding__backend="hash")
    report = index_paths(settings, [data.parent])
    by_name = {Path(f.path).name: f for f in report.files}
    jsonl, note = by_name["corpus.jsonl"], by_name["note.md"]
    assert jsonl.status is FileStatus.ADDED and jsonl.documents == 5
    assert len(jsonl.warnings) == 1 and "'r2'" in jsonl.warnings[0] and "boom" in jsonl.warnings[0]
    assert note.status is FileStatus.FAILED and "ValueError: boom" in note.reason  # a whole file, as before
    assert {k.split("::")[0] for k in index_state(settings)} == {"r0", "r1", "r3", "r4", "r5"}


_SMALL_PARTS = ("import sys, rag_cli.indexer as i; i.PART_CHUNKS = 8; i.GROUP_CHUNKS = 24; "
                "i.READ_AHEAD_CHUNKS = 32; from rag_cli.cli.app import main; sys.argv[0] = 'rag'; main()")


def _rag(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "RAG_EMBEDDING_BACKEND": "hash", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", _SMALL_PARTS, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_runs_killed_inside_a_file_written_in_parts_are_completed(tmp_path: Path) -> None:
    data = corpus(tmp_path / "docs" / "corpus.jsonl", 600)
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    assert _rag(["index", str(data.parent)], clean_dir).wait(180) == 0
    clean = index_state(settings_in(clean_dir))

    work = tmp_path / "work"
    work.mkdir()
    for delay in (1.5, 2.5, 3.5, 5.0):
        proc = _rag(["index", str(data.parent)], work)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if (work / ".rag" / "manifest.sqlite3").exists():
            index_state(settings_in(work), complete=False)  # the manifest knows every stored chunk
    proc = _rag(["index", str(data.parent)], work)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()
    assert index_state(settings_in(work)) == clean
    keyword = KeywordIndex.load(IndexPaths(work / ".rag").keyword)
    assert keyword is not None and set(keyword.ids) == set(clean)


# -- batches ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_batches_hold_chunks_of_similar_length(tmp_path: Path, samples: Path, monkeypatch) -> None:
    monkeypatch.setattr(indexer._Parts, "ready", lambda self: True)  # one group: the whole sample folder
    settings = settings_in(tmp_path, embedding__backend="hash", embedding__batch_size=4)
    embedder = RecordingEmbedder(HashEmbedder())
    report = index_paths(settings, [samples], embedder=embedder)
    counter = indexer.load_token_counter(settings.embedding.model, str(settings.base_dir))
    longest = [max(counter.count_many(call)) for call in embedder.calls]
    assert all(1 <= len(call) <= 4 for call in embedder.calls)
    assert sum(len(call) for call in embedder.calls) == report.chunks_written == report.chunks_total
    assert longest == sorted(longest, reverse=True)


# -- unchanged re-runs ------------------------------------------------------------------------

_RERUN = """
import sys
from pathlib import Path
from rag_cli.config import load_settings
from rag_cli.indexer import index_paths
from rag_cli.models import FileStatus
report = index_paths(load_settings(Path.cwd(), env={}, flags={"embedding.backend": "hash"}), [Path(sys.argv[1])])
print(report.chunks_total, report.count(FileStatus.UNCHANGED), "chromadb" in sys.modules, "bm25s" in sys.modules)
"""


@pytest.mark.slow
def test_an_unchanged_run_opens_neither_the_vector_store_nor_bm25(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    first = index_paths(settings, [samples])
    done = subprocess.run([sys.executable, "-c", _RERUN, str(samples)], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(first.chunks_total), "6", "False", "False"]


@pytest.mark.slow
def test_a_damaged_keyword_index_is_rebuilt_by_an_unchanged_run(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    folder = IndexPaths(settings.index_dir).keyword
    tag = KeywordIndex.saved_tag(folder)
    assert tag is not None and tag == KeywordIndex.load(folder).tag
    shutil.rmtree(folder / "bm25")
    assert KeywordIndex.saved_tag(folder) is None
    index_paths(settings, [samples])
    assert KeywordIndex.saved_tag(folder) == tag and KeywordIndex.load(folder) is not None
