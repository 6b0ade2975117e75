"""The manifest: the SQLite record of files, chunk ids, roots and the build record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_cli.ingest.manifest import FAILED, OK, PENDING, FileRecord, Manifest


@pytest.fixture
def manifest(tmp_path: Path) -> Iterator[Manifest]:
    m = Manifest(tmp_path / "manifest.sqlite3")
    yield m
    m.close()


def record(path: str, **changes) -> FileRecord:
    values = dict(path=path, root="/docs", doc_id=path.rsplit("/", 1)[-1], size=10, mtime_ns=123, sha256="ab" * 32,
                  status=OK, reason="", documents=1, chunks=2, warnings=())
    values.update(changes)
    return FileRecord(**values)


def test_new_manifest_is_empty(manifest: Manifest) -> None:
    assert manifest.files() == {}
    assert manifest.roots() == []
    assert manifest.chunk_count() == 0
    assert manifest.get_meta("build") is None


@pytest.mark.parametrize("value", [
    {"embedding.model": "m", "embedding.dimension": 384, "chunking.context_header": True},
    [1, "two", None],
    "text",
    3.5,
    None,
])
def test_meta_roundtrip(manifest: Manifest, value) -> None:
    manifest.set_meta("build", value)
    assert manifest.get_meta("build") == value


def test_meta_overwrite_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    m = Manifest(path)
    m.set_meta("build", {"a": 1})
    m.set_meta("build", {"a": 2})
    m.set_meta("updated", 17.5)
    m.close()
    reopened = Manifest(path)
    try:
        assert reopened.get_meta("build") == {"a": 2}
        assert reopened.get_meta("updated") == 17.5
        assert reopened.get_meta("missing") is None
    finally:
        reopened.close()


def test_roots_are_sorted_and_unique(manifest: Manifest) -> None:
    manifest.add_root("/b/docs")
    manifest.add_root("/a/notes")
    manifest.add_root("/b/docs")
    assert manifest.roots() == ["/a/notes", "/b/docs"]


def test_put_file_roundtrip_and_replace(manifest: Manifest) -> None:
    a = record("/docs/a.md", warnings=("page 2: no text", "record 3: bad JSON"))
    b = record("/docs/sub/b.pdf", doc_id="sub/b.pdf", status=FAILED, reason="encrypted", documents=0, chunks=0)
    manifest.put_file(a)
    manifest.put_file(b)
    assert manifest.files() == {a.path: a, b.path: b}
    assert isinstance(manifest.files()[a.path].warnings, tuple)

    a2 = record("/docs/a.md", size=99, sha256="cd" * 32, status=PENDING)
    manifest.put_file(a2)
    assert manifest.files() == {a.path: a2, b.path: b}


def test_register_forget_and_remove_chunks(manifest: Manifest) -> None:
    manifest.register_chunks("/docs/a.md", [("a.md::0", "a.md"), ("a.md::1", "a.md")])
    manifest.register_chunks("/docs/b.jsonl", [("r1::0", "r1"), ("r2::0", "r2")])
    assert manifest.chunk_ids("/docs/a.md") == {"a.md::0", "a.md::1"}
    assert manifest.chunk_ids("/docs/b.jsonl") == {"r1::0", "r2::0"}
    assert manifest.chunk_ids("/docs/none.md") == set()
    assert manifest.chunk_count() == 4

    manifest.register_chunks("/docs/a.md", [("a.md::0", "a.md")])  # registering again is harmless
    assert manifest.chunk_count() == 4

    manifest.forget_chunks(["a.md::1", "not-there"])
    assert manifest.chunk_ids("/docs/a.md") == {"a.md::0"}
    assert manifest.chunk_count() == 3

    manifest.put_file(record("/docs/b.jsonl"))
    manifest.remove_file("/docs/b.jsonl")
    assert manifest.chunk_ids("/docs/b.jsonl") == set()
    assert "/docs/b.jsonl" not in manifest.files()
    assert manifest.chunk_count() == 1


def test_owners_finds_doc_ids_held_by_other_files(manifest: Manifest) -> None:
    manifest.register_chunks("/x/a.jsonl", [("r1::0", "r1"), ("r1::1", "r1"), ("r2::0", "r2")])
    manifest.register_chunks("/y/b.jsonl", [("r3::0", "r3")])
    # the same path holding its own ids is not a clash
    assert manifest.owners(["r1", "r2"], "/x/a.jsonl") == {}
    assert manifest.owners(["r1", "r3", "r9"], "/x/a.jsonl") == {"r3": "/y/b.jsonl"}
    assert manifest.owners(["r1", "r2", "r3"], "/z/c.jsonl") == {"r1": "/x/a.jsonl", "r2": "/x/a.jsonl",
                                                                "r3": "/y/b.jsonl"}
    assert manifest.owners([], "/z/c.jsonl") == {}


def test_owners_with_more_ids_than_one_query_holds(manifest: Manifest) -> None:
    ids = [f"doc{i}" for i in range(1234)]
    manifest.register_chunks("/x/big.jsonl", [(f"{d}::0", d) for d in ids])
    found = manifest.owners(["other"] + ids, "/y/new.jsonl")
    assert found == {d: "/x/big.jsonl" for d in ids}


def test_transaction_commits(manifest: Manifest) -> None:
    with manifest.transaction():
        manifest.put_file(record("/docs/a.md"))
        manifest.register_chunks("/docs/a.md", [("a.md::0", "a.md")])
        manifest.set_meta("build", {"v": 1})
    assert set(manifest.files()) == {"/docs/a.md"}
    assert manifest.chunk_count() == 1
    assert manifest.get_meta("build") == {"v": 1}


def test_transaction_rolls_back_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    m = Manifest(path)
    m.put_file(record("/docs/kept.md"))
    m.set_meta("build", {"v": 1})

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with m.transaction():
            m.put_file(record("/docs/a.md"))
            m.register_chunks("/docs/a.md", [("a.md::0", "a.md")])
            m.add_root("/docs")
            m.set_meta("build", {"v": 2})
            m.remove_file("/docs/kept.md")
            raise Boom
    assert set(m.files()) == {"/docs/kept.md"}
    assert m.chunk_count() == 0
    assert m.roots() == []
    assert m.get_meta("build") == {"v": 1}
    # the connection is usable after the rollback, and nothing leaks to another connection
    with m.transaction():
        m.add_root("/after")
    m.close()
    other = Manifest(path)
    try:
        assert set(other.files()) == {"/docs/kept.md"}
        assert other.roots() == ["/after"]
    finally:
        other.close()


def test_clear_forgets_files_and_chunks_but_keeps_roots_and_meta(manifest: Manifest) -> None:
    manifest.put_file(record("/docs/a.md"))
    manifest.register_chunks("/docs/a.md", [("a.md::0", "a.md")])
    manifest.add_root("/docs")
    manifest.set_meta("build", {"v": 1})
    manifest.clear()
    assert manifest.files() == {}
    assert manifest.chunk_count() == 0
    assert manifest.chunk_ids("/docs/a.md") == set()
    # `rag index --rebuild` clears the manifest and still knows which folders to index again
    assert manifest.roots() == ["/docs"]
    assert manifest.get_meta("build") == {"v": 1}
