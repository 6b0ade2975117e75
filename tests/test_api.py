"""The library facade, `rag_cli.api.Index`: one object that indexes, searches, answers and
describes an index, deciding itself between a running `rag serve` and this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexing_helpers import settings_in
from rag_cli.api import Index
from rag_cli.errors import IndexNotFound
from rag_cli.testing.fakes import ScriptedGenerator


def hash_index(tmp_path: Path, **flags) -> Index:
    return Index(settings_in(tmp_path, embedding__backend="hash", serve__use="never", **flags))


def test_an_index_is_built_searched_answered_and_described_through_one_object(tmp_path: Path, samples: Path):
    index = hash_index(tmp_path)
    with pytest.raises(IndexNotFound):
        index.status()
    report = index.index([samples])
    assert report.chunks_written > 0 and not report.problems
    status = index.status()
    assert status.chunks == report.chunks_total and status.documents == len(report.files)
    assert status.roots == (str(samples.resolve()),)
    assert status.store == "" and status.files["total"] == len(report.files)

    hits = index.search("How often should I feed my starter?", k=3)
    assert 0 < len(hits) <= 3 and "guides/starter.md" in [h.doc_id for h in hits]

    asked = index.ask("How often should I feed my starter?", retrieve_only=True)
    assert asked.served_by is None  # serve.use = never: this process
    assert "guides/starter.md" in [p["doc_id"] for p in asked.answer.passages]
    assert "open" in asked.stages and asked.seconds > 0

    filtered = index.ask("How often should I feed my starter?", where=["path=faq*"], retrieve_only=True)
    assert filtered.answer.passages and all(p["doc_id"].startswith("faq") for p in filtered.answer.passages)


def test_the_asker_can_be_built_by_the_caller(tmp_path: Path, samples: Path):
    """What `rag serve` does: its Asker takes models from a shared pool, through ``make_asker``."""
    from rag_cli.ask import Asker

    settings = settings_in(tmp_path, embedding__backend="hash", serve__use="never", retrieval__min_score=0.0)
    Index(settings).index([samples])
    asked_of = []

    def reply(messages):
        asked_of.append(messages)
        return "Feed it once every 24 hours [1]."

    generator = ScriptedGenerator(reply)
    built = []

    class Pooled(Asker):
        def generator(self, model: str):
            return generator

    def make(s, searcher):
        built.append(searcher)
        return Pooled(s, searcher=searcher)

    index = Index(settings, serve=False, make_asker=make)
    asked = index.ask("How often should I feed my starter?")
    assert len(asked_of) == 1 and not asked.answer.refused  # the caller's model answered
    assert built == [index.searcher()]  # built once, on the index's own Searcher
    again = index.ask("How often should I feed my starter?", use_cache=False)
    assert "open" not in again.stages and len(built) == 1  # the open index is reused


def test_indexing_again_reopens_what_the_index_had_opened(tmp_path: Path, samples: Path):
    index = hash_index(tmp_path)
    index.index([samples])
    before = index.searcher()
    (samples / "rye.md").write_text("# Rye\n\nRye flour ferments faster than wheat flour.\n")
    index.index()
    assert index.searcher() is not before
    assert index.search("rye flour ferments", k=1)[0].doc_id == "rye.md"
