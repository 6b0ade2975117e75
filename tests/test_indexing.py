"""End-to-end indexing with the real embedded Chroma and the real bundled embedding model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rag_cli.errors import IndexMismatch, InputError
from rag_cli.index_dir import IndexPaths
from rag_cli.indexer import index_paths
from rag_cli.models import FileStatus
from rag_cli.store.chroma import ChromaStore
from rag_cli.testing.fakes import HashEmbedder
from tests.indexing_helpers import index_state, settings_in

pytestmark = pytest.mark.slow


class CountingEmbedder:
    """Wraps an embedder and counts the texts it embeds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.texts = 0

    def embed_documents(self, texts):
        self.texts += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)

    @property
    def loaded(self):
        return self.inner.loaded

    def warm_up(self):
        self.inner.warm_up()


def by_status(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.files:
        out.setdefault(f.status.value, []).append(Path(f.path).name)
    return out


def test_samples_index_and_search_with_the_real_model(tmp_path: Path, samples: Path, real_embedder) -> None:
    settings = settings_in(tmp_path)
    report = index_paths(settings, [samples], embedder=real_embedder)

    statuses = by_status(report)
    assert sorted(statuses["added"]) == ["README.md", "baking-day.md", "country-loaf.pdf", "faq.txt",
                                         "glossary.rst", "starter.md"]
    assert report.problems == ()
    assert report.chunks_written == report.chunks_total == sum(f.chunks for f in report.files) > 20
    assert settings.index_dir == tmp_path / ".rag"
    state = index_state(settings)
    assert len(state) == report.chunks_total

    store = ChromaStore(IndexPaths(settings.index_dir).chroma)
    hits = store.query(real_embedder.embed_query("How often should I feed my sourdough starter?"), k=3)
    assert hits[0].metadata["doc_id"] == "guides/starter.md"
    pdf_hits = store.query(real_embedder.embed_query("country loaf ingredient weights whole wheat flour"), k=5,
                           where={"doc_id": "recipes/country-loaf.pdf"})
    assert pdf_hits and all(h.metadata["page_start"] >= 1 for h in pdf_hits)
    assert pdf_hits[0].metadata["page_start"] == 1
    md = store.query(real_embedder.embed_query("bulk fermentation folds"), k=1,
                     where={"doc_id": "guides/baking-day.md"})[0].metadata
    assert md["heading"].startswith("Baking day")
    assert md["source"] == str(samples / "guides" / "baking-day.md")


def test_second_run_reads_and_embeds_nothing(tmp_path: Path, samples: Path, monkeypatch) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    first = index_paths(settings, [samples])
    before = index_state(settings)

    import rag_cli.indexer as indexer

    reads: list[Path] = []
    real_read = indexer.read_bytes
    monkeypatch.setattr(indexer, "read_bytes", lambda p: reads.append(p) or real_read(p))
    embedder = CountingEmbedder(HashEmbedder())
    second = index_paths(settings, [samples], embedder=embedder)

    assert by_status(second) == {"unchanged": sorted(Path(f.path).name for f in first.files)} or \
        set(by_status(second)) == {"unchanged"}
    assert second.count(FileStatus.UNCHANGED) == 6
    assert reads == [] and embedder.texts == 0 and second.chunks_written == 0
    assert index_state(settings) == before


def test_touched_file_is_read_once_and_not_reembedded(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    faq = samples / "faq.txt"
    os.utime(faq, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    embedder = CountingEmbedder(HashEmbedder())
    report = index_paths(settings, [samples], embedder=embedder)
    assert report.count(FileStatus.UNCHANGED) == 6 and embedder.texts == 0


def test_edit_replaces_only_changed_chunks(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    before = index_state(settings)

    starter = samples / "guides" / "starter.md"
    text = starter.read_text()
    starter.write_text(text + "\n## Naming your starter\n\nMany bakers name their starter; ours is Barnaby.\n")
    embedder = CountingEmbedder(HashEmbedder())
    report = index_paths(settings, [samples], embedder=embedder)

    assert by_status(report)["updated"] == ["starter.md"]
    after = index_state(settings)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed and all(k.startswith("guides/starter.md::") for k in changed)
    assert embedder.texts == len(changed) < len([k for k in after if k.startswith("guides/starter.md::")])

    # Shrinking the file removes its now-surplus chunks.
    starter.write_text("# Sourdough starter\n\nFeed it daily.\n")
    index_paths(settings, [samples])
    final = index_state(settings)
    assert [k for k in final if k.startswith("guides/starter.md::")] == ["guides/starter.md::0"]


def test_deleted_file_leaves_the_index(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    (samples / "glossary.rst").unlink()
    report = index_paths(settings, [samples])
    assert by_status(report)["removed"] == ["glossary.rst"]
    assert not [k for k in index_state(settings) if k.startswith("glossary.rst::")]
    assert report.chunks_deleted > 0


def test_no_paths_reindexes_known_roots(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    (samples / "new.md").write_text("# New\n\nA new note about rye flour.\n")
    report = index_paths(settings, [])
    assert by_status(report)["added"] == ["new.md"]


def test_nothing_to_index_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        index_paths(settings_in(tmp_path, embedding__backend="hash"), [])
    with pytest.raises(InputError, match="no such file"):
        index_paths(settings_in(tmp_path, embedding__backend="hash"), [tmp_path / "missing"])


def test_other_settings_are_refused_until_rebuild(tmp_path: Path, samples: Path) -> None:
    index_paths(settings_in(tmp_path, embedding__backend="hash"), [samples])
    smaller = settings_in(tmp_path, embedding__backend="hash", chunking__size=100)
    with pytest.raises(IndexMismatch) as err:
        index_paths(smaller, [samples])
    assert "chunking.size" in err.value.message and "--rebuild" in (err.value.hint or "")
    report = index_paths(smaller, [samples], rebuild=True)
    assert report.rebuilt and report.count(FileStatus.ADDED) == 6
    assert all(chunk_tokens <= 100 for chunk_tokens in _stored_tokens(smaller))


def _stored_tokens(settings) -> list[int]:
    store = ChromaStore(IndexPaths(settings.index_dir).chroma)
    got = store._collection.get(include=["metadatas"])
    return [m["tokens"] for m in got["metadatas"]]


def test_jsonl_corpus_records_are_documents(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = (Path(__file__).resolve().parents[2] / "shared/eval/scifact/corpus.jsonl").read_text().splitlines()[:40]
    corpus.write_text("\n".join(lines) + "\n")
    settings = settings_in(tmp_path, embedding__backend="hash")
    report = index_paths(settings, [corpus])
    assert report.files[0].documents == 40
    state = index_state(settings)
    import json

    ids = {json.loads(line)["id"] for line in lines}
    assert {k.split("::")[0] for k in state} == ids

    # Editing one record re-embeds that record only.
    first = json.loads(lines[0])
    first["text"] = first["text"] + " An added closing sentence."
    corpus.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    embedder = CountingEmbedder(HashEmbedder())
    index_paths(settings, [corpus], embedder=embedder)
    after = index_state(settings)
    changed = {k for k in after if state.get(k) != after[k]}
    assert changed and {k.split("::")[0] for k in changed} == {first["id"]}
    assert embedder.texts == len(changed)


def test_bad_input_is_skipped_and_nothing_indexed_is_lost(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    before = index_state(settings)
    pdf = samples / "recipes" / "country-loaf.pdf"
    pdf_chunks = {k: v for k, v in before.items() if k.startswith("recipes/country-loaf.pdf::")}

    pdf.write_bytes(pdf.read_bytes()[:300])  # a good PDF turns corrupt
    (samples / "binary.txt").write_bytes(bytes(range(256)) * 10)
    (samples / "latin1.txt").write_bytes("Café crème, façade: a levain note.".encode("latin-1"))
    (samples / "empty.md").write_bytes(b"")
    report = index_paths(settings, [samples])

    statuses = {Path(f.path).name: f for f in report.files}
    assert statuses["country-loaf.pdf"].status is FileStatus.FAILED
    assert "PDF" in statuses["country-loaf.pdf"].reason
    assert statuses["binary.txt"].status is FileStatus.FAILED and "binary" in statuses["binary.txt"].reason
    assert statuses["latin1.txt"].status is FileStatus.ADDED and statuses["latin1.txt"].notes
    assert statuses["empty.md"].status is FileStatus.SKIPPED
    assert {Path(p.path).name for p in report.problems} == {"country-loaf.pdf", "binary.txt"}
    after = index_state(settings)
    assert {k: v for k, v in after.items() if k in pdf_chunks} == pdf_chunks  # old PDF chunks kept


def _keyword_ids(settings) -> tuple[set[str], object]:
    from rag_cli.store.keyword import KeywordIndex

    kw = KeywordIndex.load(IndexPaths(settings.index_dir).keyword)
    assert kw is not None
    return set(kw.ids), kw.tag


def _updated(settings) -> object:
    from rag_cli.ingest.manifest import Manifest

    m = Manifest(IndexPaths(settings.index_dir).manifest)
    try:
        return m.get_meta("updated")
    finally:
        m.close()


def test_keyword_index_follows_edits_and_deletions(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    ids, tag = _keyword_ids(settings)
    assert ids == set(index_state(settings)) and tag == _updated(settings)

    (samples / "faq.txt").write_text("Q: Does rye flour ferment faster?\nA: Yes, noticeably faster.\n")
    (samples / "glossary.rst").unlink()
    index_paths(settings, [samples])
    ids2, tag2 = _keyword_ids(settings)
    assert ids2 == set(index_state(settings)) and tag2 == _updated(settings) != tag
    assert not any(i.startswith("glossary.rst::") for i in ids2)

    from rag_cli.retrieve.search import Searcher

    hits, _ = Searcher(settings).search("rye ferment faster", 3, mode="keyword")
    assert hits[0].doc_id == "faq.txt" and -1.0 <= hits[0].score <= 1.0

    index_paths(settings, [samples])  # nothing changed: the keyword index is left as it is
    assert _keyword_ids(settings) == (ids2, tag2)


def test_a_stale_keyword_index_is_not_used(tmp_path: Path, samples: Path) -> None:
    """After an interrupted run the saved keyword index may lag the store: readers rebuild it."""
    from rag_cli.ingest.manifest import Manifest
    from rag_cli.retrieve.search import Searcher

    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    m = Manifest(IndexPaths(settings.index_dir).manifest)
    m.set_meta("updated", "dirty:1")  # what a killed run leaves
    m.close()
    searcher = Searcher(settings)
    kw = searcher.keyword_index()
    assert kw.tag == "dirty:1" and set(kw.ids) == set(index_state(settings))


def test_a_keyword_index_built_another_way_is_not_loaded(tmp_path: Path, samples: Path) -> None:
    import json

    from rag_cli.store.keyword import KeywordIndex

    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    folder = IndexPaths(settings.index_dir).keyword
    assert KeywordIndex.load(folder) is not None
    data = json.loads((folder / "chunks.json").read_text())
    data["analyzer"] = "some older tokenizer"
    (folder / "chunks.json").write_text(json.dumps(data))
    assert KeywordIndex.load(folder) is None
    index_paths(settings, [samples])  # nothing changed, but the keyword index is rebuilt
    assert KeywordIndex.load(folder) is not None


# -- several roots holding the same relative path -------------------------------------------


def _two_roots(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, text in ((a, "# A\n\nApples are red.\n"), (b, "# B\n\nBananas are yellow.\n")):
        (root / "sub").mkdir(parents=True)
        (root / "notes.md").write_text(text)
        (root / "sub" / "more.md").write_text(text.replace("# ", "# More "))
    (a / "only-a.md").write_text("# Only A\n\nAvocados are green.\n")
    return a, b


def _doc_ids(settings) -> dict[str, str]:
    """{path: document id} as the manifest records it, checked against the doc ids of its chunks."""
    from rag_cli.ingest.manifest import Manifest

    manifest = Manifest(IndexPaths(settings.index_dir).manifest)
    try:
        files = {path: rec.doc_id for path, rec in manifest.files().items()}
        for doc, path, _ in manifest.document_table():
            assert files[path] == doc, (path, doc)
    finally:
        manifest.close()
    return files


def _keyword_top(settings, question: str) -> str:
    from rag_cli.retrieve.search import Searcher

    hits, _ = Searcher(settings).search(question, 1, mode="keyword")
    return hits[0].doc_id


def test_one_root_keeps_the_relative_paths_as_ids(tmp_path: Path) -> None:
    """The ids of an index of one root are what they always were: existing indexes, answer caches and
    evaluation files keep working after an upgrade."""
    a, _ = _two_roots(tmp_path)
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [a])
    assert sorted(index_state(settings)) == ["notes.md::0", "only-a.md::0", "sub/more.md::0"]
    assert _doc_ids(settings) == {str(a / "notes.md"): "notes.md", str(a / "only-a.md"): "only-a.md",
                                  str(a / "sub" / "more.md"): "sub/more.md"}
    single = tmp_path / "single"
    single.mkdir()
    (single / "notes.md").write_text("# Single\n\nCherries are dark.\n")
    other = settings_in(single, embedding__backend="hash")
    index_paths(other, [single / "notes.md"])  # a file as the root: its name
    assert sorted(index_state(other)) == ["notes.md::0"]


def test_two_roots_with_the_same_relative_paths_in_one_run(tmp_path: Path) -> None:
    a, b = _two_roots(tmp_path)
    settings = settings_in(tmp_path, embedding__backend="hash")
    report = index_paths(settings, [a, b])
    assert report.problems == () and report.count(FileStatus.ADDED) == 5
    ids = _doc_ids(settings)
    assert ids == {str(a / "notes.md"): "notes.md", str(a / "only-a.md"): "only-a.md",
                   str(a / "sub" / "more.md"): "sub/more.md",
                   str(b / "notes.md"): "b/notes.md", str(b / "sub" / "more.md"): "b/sub/more.md"}
    assert len(index_state(settings)) == report.chunks_total == 5
    assert _keyword_top(settings, "apples red") == "notes.md"
    assert _keyword_top(settings, "bananas yellow") == "b/notes.md"

    embedder = CountingEmbedder(HashEmbedder())
    again = index_paths(settings, [a, b], embedder=embedder)
    assert again.count(FileStatus.UNCHANGED) == 5 and embedder.texts == 0 and again.chunks_written == 0
    again = index_paths(settings, [], embedder=embedder)  # every root, in the order first indexed
    assert again.count(FileStatus.UNCHANGED) == 5 and embedder.texts == 0
    assert _doc_ids(settings) == ids

    # A rebuild of every root gives the files the ids they had.
    index_paths(settings, [], rebuild=True)
    assert _doc_ids(settings) == ids


def test_a_second_root_indexed_later_leaves_the_first_ones_ids(tmp_path: Path) -> None:
    a, b = _two_roots(tmp_path)
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [a])
    before = index_state(settings)
    report = index_paths(settings, [b])
    assert report.problems == () and report.count(FileStatus.ADDED) == 2
    after = index_state(settings)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["b/notes.md::0", "b/sub/more.md::0"]
    assert _keyword_top(settings, "bananas yellow") == "b/notes.md"

    embedder = CountingEmbedder(HashEmbedder())
    for targets in ([], [b], [a], [b, a]):  # however they are named again, nothing flips
        again = index_paths(settings, targets, embedder=embedder)
        assert embedder.texts == 0 and again.chunks_written == 0 and again.chunks_deleted == 0
        assert index_state(settings) == after

    # Deleting a's notes.md removes its chunks only; b's file keeps its id (ids never move).
    (a / "notes.md").unlink()
    report = index_paths(settings, [])
    assert [Path(f.path) for f in report.files if f.status is FileStatus.REMOVED] == [a / "notes.md"]
    assert set(index_state(settings)) == set(after) - {"notes.md::0"}
    assert _keyword_top(settings, "bananas yellow") == "b/notes.md"
    # A new a/notes.md takes the free id again.
    (a / "notes.md").write_text("# A\n\nApricots are orange.\n")
    index_paths(settings, [])
    assert set(index_state(settings)) == set(after)


def test_root_folders_with_the_same_name_get_their_parents_in_front(tmp_path: Path) -> None:
    roots = [tmp_path / "x" / "docs", tmp_path / "y" / "docs", tmp_path / "z" / "docs"]
    for i, root in enumerate(roots):
        root.mkdir(parents=True)
        (root / "README.md").write_text(f"# Readme {i}\n\nWord{i} is here.\n")
    # A fourth root whose own relative path is the id the second root's file would take.
    (tmp_path / "w" / "docs").mkdir(parents=True)
    (tmp_path / "w" / "docs" / "README.md").write_text("# Nested\n\nNested words.\n")
    settings = settings_in(tmp_path, embedding__backend="hash")
    report = index_paths(settings, [*roots, tmp_path / "w"])
    assert report.problems == ()
    assert _doc_ids(settings) == {str(roots[0] / "README.md"): "README.md",
                                  str(roots[1] / "README.md"): "docs/README.md",
                                  str(roots[2] / "README.md"): "z/docs/README.md",
                                  str(tmp_path / "w" / "docs" / "README.md"): "w/docs/README.md"}


def test_the_same_file_name_as_two_file_roots(tmp_path: Path) -> None:
    a, b = _two_roots(tmp_path)
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [a / "notes.md"])
    report = index_paths(settings, [b / "notes.md"])
    assert report.problems == ()
    assert sorted(index_state(settings)) == ["b/notes.md::0", "notes.md::0"]


def test_a_jsonl_record_id_held_by_another_file_in_the_same_run_is_refused(tmp_path: Path) -> None:
    """A record's id is the corpus's own (qrels name it), so it is never prefixed: a second file with
    the same record id is refused, in one run as across runs, and never breaks the run."""
    for name, text in (("x", "apples"), ("y", "bananas")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "c.jsonl").write_text(
            f'{{"id": "r1", "text": "{text}"}}\n{{"id": "{name}2", "text": "more {text}"}}\n')
    settings = settings_in(tmp_path, embedding__backend="hash")
    report = index_paths(settings, [tmp_path / "x", tmp_path / "y"])
    [failed] = report.problems
    assert failed.path == str(tmp_path / "y" / "c.jsonl") and "'r1' is already indexed from" in failed.reason
    assert str(tmp_path / "x" / "c.jsonl") in failed.reason
    assert sorted(index_state(settings)) == ["r1::0", "x2::0"]
