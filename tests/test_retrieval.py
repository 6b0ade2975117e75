"""Retrieval: filters, fusion, MMR, the keyword index, searches over a real Chroma index (with the
fast ``hash`` embedder), the cross-encoder reranker and embedding prefixes.

Small hand-made cases; the expected values are worked out in the comments.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from rag_cli.config import EmbeddingSettings
from rag_cli.errors import ConfigError, ExitCode, ModelLoadError
from rag_cli.index_dir import IndexPaths
from rag_cli.indexer import index_paths
from rag_cli.models import DocumentInfo, Hit
from rag_cli.retrieve.filters import parse_date, parse_where
from rag_cli.retrieve.search import (
    Searcher,
    maximal_marginal_relevance,
    reciprocal_rank_fusion,
    weighted_fusion,
    with_neighbours,
)
from rag_cli.store.chroma import ChromaStore
from rag_cli.store.keyword import KeywordIndex, document_texts
from tests.indexing_helpers import invoke, settings_in

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ROOT2 = math.sqrt(2)  # z-scores of three values x, y, y (x != y): sqrt(2), -1/sqrt(2), -1/sqrt(2)


def ns(*args: int) -> int:
    """Local time -> nanoseconds since the epoch (whole seconds, so exact)."""
    return int(datetime(*args).timestamp()) * 10**9


# -- parse_where ----------------------------------------------------------------------------


def test_where_syntax() -> None:
    f = parse_where(["path=guides/*", "type=pdf,markdown", "page=2-4", "year=2020", "lang=en"])
    assert f.path_globs == ("guides/*",) and f.kinds == ("pdf", "markdown") and f.pages == (2, 4)
    assert f.fields == (("year", "=", 2020), ("lang", "=", "en"))  # numbers compare as numbers
    bound = f.bind([DocumentInfo("guides/a.md", "/x/guides/a.md", 1), DocumentInfo("faq.txt", "/x/faq.txt", 2)])
    assert bound.allowed_docs == {"guides/a.md"}
    assert bound.where == {"$and": [
        {"doc_id": {"$in": ["guides/a.md"]}}, {"kind": {"$in": ["pdf", "markdown"]}},
        {"page_start": {"$lte": 4}}, {"page_end": {"$gte": 2}},
        {"meta_year": {"$eq": 2020}}, {"meta_lang": {"$eq": "en"}},
    ]}
    assert parse_where(["page=3"]).pages == (3, 3)
    # One clause is not wrapped in $and.
    assert parse_where(["type=text"]).bind([]).where == {"kind": {"$in": ["text"]}}
    # No filter: no clause, every chunk matches.
    empty = parse_where([])
    assert empty.empty and empty.bind([]).where is None and empty.bind([]).matches({})
    # A glob no document matches still gives a clause (that matches nothing), not None.
    nothing = parse_where(["path=nowhere/*"]).bind([DocumentInfo("faq.txt", "/x/faq.txt", 1)])
    assert nothing.allowed_docs == frozenset() and nothing.where == {"doc_id": {"$in": ["\0no match\0"]}}


def test_path_globs_match_the_doc_id_or_the_source_path() -> None:
    docs = [DocumentInfo("guides/a.md", "/x/guides/a.md"), DocumentInfo("a.md", "/x/reports/2023/a.md"),
            DocumentInfo("faq.txt", "/x/faq.txt"), DocumentInfo("rec-1", "/x/data/corpus.jsonl")]
    allowed = lambda *exprs: parse_where(exprs).bind(docs).allowed_docs  # noqa: E731
    assert allowed("path=guides/*") == {"guides/a.md"}                 # the doc id
    assert allowed("path=reports/2023/*.md") == {"a.md"}               # the tail of the source path
    assert allowed("path=*2023*") == {"a.md"}
    assert allowed("path=/x/data/corpus.jsonl") == {"rec-1"}           # a JSONL record by its file
    assert allowed("path=guides/*", "path=faq.txt") == {"guides/a.md", "faq.txt"}  # globs: any of them


def test_numeric_field_comparisons() -> None:
    assert parse_where(["year>=2020"]).fields == (("year", ">=", 2020),)
    assert parse_where(["year>=2020"]).bind([]).where == {"meta_year": {"$gte": 2020}}
    assert parse_where(["score<3.5"]).fields == (("score", "<", 3.5),)
    assert parse_where(["score<3.5"]).bind([]).where == {"meta_score": {"$lt": 3.5}}
    assert parse_where(["n > 1", "n<=9"]).bind([]).where == {"$and": [{"meta_n": {"$gt": 1}},
                                                                       {"meta_n": {"$lte": 9}}]}
    assert parse_where(["flag=true"]).fields == (("flag", "=", True),)
    assert parse_where(["title = Hello world"]).fields == (("title", "=", "Hello world"),)  # spaces trimmed


def test_modified_dates_cover_whole_days() -> None:
    day, next_day = ns(2024, 1, 1), ns(2024, 1, 2)  # local midnight of 2024-01-01 and of the day after
    assert parse_date("2024-01-01") == (day, next_day)
    assert parse_where(["modified>=2024-01-01"]).modified == ((">=", day),)
    assert parse_where(["modified<=2024-01-01"]).modified == (("<", next_day),)  # all of that day
    assert parse_where(["modified=2024-01-01"]).modified == ((">=", day), ("<", next_day))
    assert parse_where(["modified>2024-01-01"]).modified == ((">=", next_day),)  # after that day
    assert parse_where(["modified<2024-01-01"]).modified == (("<", day),)  # before it
    # A date-time is an instant.
    noon = ns(2024, 1, 1, 12)
    assert parse_where(["modified>=2024-01-01T12:00:00"]).modified == ((">=", noon),)
    assert parse_where(["modified<=2024-01-01T12:00:00"]).modified == (("<=", noon),)

    docs = [DocumentInfo("late", "/x/late", ns(2024, 1, 1, 23, 59, 59)),
            DocumentInfo("next", "/x/next", ns(2024, 1, 2)),
            DocumentInfo("before", "/x/before", ns(2023, 12, 31, 12)),
            DocumentInfo("unknown", "/x/unknown", None)]  # no mtime: never matches a date filter
    allowed = lambda expr: parse_where([expr]).bind(docs).allowed_docs  # noqa: E731
    assert allowed("modified<=2024-01-01") == {"late", "before"}
    assert allowed("modified=2024-01-01") == {"late"}
    assert allowed("modified>=2024-01-01") == {"late", "next"}
    assert allowed("modified>2024-01-01") == {"next"}
    assert allowed("modified<2024-01-01") == {"before"}
    # path and modified together: both must hold.
    assert parse_where(["modified>=2024-01-01", "path=n*"]).bind(docs).allowed_docs == {"next"}


def test_relative_dates() -> None:
    now = 1_000_000_000.0
    # 30 days = 2,592,000 s before now: 997,408,000 s; an instant, so start == end.
    assert parse_date("30d", now=now) == (997_408_000 * 10**9, 997_408_000 * 10**9)
    assert parse_date("2w", now=now)[0] == (1_000_000_000 - 14 * 86_400) * 10**9
    assert parse_date("12h", now=now)[0] == (1_000_000_000 - 12 * 3_600) * 10**9
    before = time.time()
    (op, value), = parse_where(["modified>=30d"]).modified
    after = time.time()
    assert op == ">=" and (before - 30 * 86_400) * 1e9 - 1e6 <= value <= (after - 30 * 86_400) * 1e9 + 1e6
    (op, _), = parse_where(["modified>30d"]).modified
    assert op == ">"  # an instant: no day to round to
    (op, _), = parse_where(["modified<=2w"]).modified
    assert op == "<="


@pytest.mark.parametrize("bad", ["path", "type=odt", "page=x", "page=5-2", "page=0", "=x", "path=", "path>=a",
                                 "type<pdf", "year>=abc", "modified>=notadate", "modified=30d"])
def test_malformed_filters_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_where([bad])


def test_bound_filter_matches_mirrors_the_where_clause() -> None:
    docs = [DocumentInfo("guides/a.md", "/x/guides/a.md", ns(2024, 3, 1)),
            DocumentInfo("guides/old.md", "/x/guides/old.md", ns(2020, 3, 1)),
            DocumentInfo("faq.txt", "/x/faq.txt", ns(2024, 3, 1))]
    bound = parse_where(["path=guides/*", "modified>=2023-01-01", "type=markdown", "lang=en",
                         "year>=2020"]).bind(docs)
    assert bound.allowed_docs == {"guides/a.md"}  # guides/old.md is too old, faq.txt not in guides/
    good = {"doc_id": "guides/a.md", "kind": "markdown", "meta_lang": "en", "meta_year": 2021}
    assert bound.matches(good)
    assert bound.matches({**good, "meta_year": 2020})  # >= includes the bound
    assert not bound.matches({**good, "meta_year": 2019})
    assert not bound.matches({**good, "meta_year": "2021"})  # only numbers compare with >=
    assert not bound.matches({**good, "kind": "pdf"})
    assert not bound.matches({**good, "doc_id": "faq.txt"})
    assert not bound.matches({**good, "doc_id": "guides/old.md"})
    assert not bound.matches({**good, "meta_lang": "de"})
    missing = dict(good)
    del missing["meta_year"]
    assert not bound.matches(missing)  # a missing field fails

    pages = parse_where(["page=2-3"]).bind(docs)
    assert pages.allowed_docs is None  # pages do not restrict documents
    assert pages.matches({"page_start": 3, "page_end": 4})      # overlaps 2-3
    assert pages.matches({"page_start": 1, "page_end": 2})      # overlaps 2-3
    assert not pages.matches({"page_start": 4, "page_end": 5})
    assert not pages.matches({"page_start": 1, "page_end": 1})
    assert not pages.matches({"doc_id": "no-pages.md"})


def test_bound_filter_matches_agrees_with_chroma(tmp_path: Path) -> None:
    """The same metadata through Chroma's where clause and through matches(): the same chunks."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    metas = {
        "g1": {"doc_id": "guides/a.md", "kind": "markdown", "meta_lang": "en", "meta_year": 2021},
        "g2": {"doc_id": "guides/a.md", "kind": "markdown", "meta_lang": "de", "meta_year": 2021},
        "g3": {"doc_id": "guides/a.md", "kind": "markdown", "meta_lang": "en"},
        "g4": {"doc_id": "guides/a.md", "kind": "markdown", "meta_lang": "en", "meta_year": 2019.5},
        "g5": {"doc_id": "guides/a.md", "kind": "markdown", "meta_lang": "en", "meta_year": "2021"},
        "p1": {"doc_id": "r/loaf.pdf", "kind": "pdf", "page_start": 1, "page_end": 1, "meta_year": 2020},
        "p2": {"doc_id": "r/loaf.pdf", "kind": "pdf", "page_start": 2, "page_end": 3, "meta_year": 2022},
        "p3": {"doc_id": "r/loaf.pdf", "kind": "pdf", "page_start": 4, "page_end": 4},
        "f1": {"doc_id": "faq.txt", "kind": "text", "meta_lang": "en", "meta_year": 2024},
        "o1": {"doc_id": "guides/old.md", "kind": "markdown", "meta_lang": "en", "meta_year": 2024},
    }
    docs = [DocumentInfo("guides/a.md", "/x/guides/a.md", ns(2024, 3, 1)),
            DocumentInfo("guides/old.md", "/x/guides/old.md", ns(2020, 3, 1)),
            DocumentInfo("r/loaf.pdf", "/x/r/loaf.pdf", ns(2024, 3, 1)),
            DocumentInfo("faq.txt", "/x/faq.txt", ns(2024, 3, 1))]
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"),
                                       settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("filters", embedding_function=None)
    collection.add(ids=list(metas), embeddings=[[1.0, 0.0]] * len(metas), metadatas=list(metas.values()))
    cases = {
        ("path=guides/*",): {"g1", "g2", "g3", "g4", "g5", "o1"},
        ("path=guides/*", "modified>=2023-01-01"): {"g1", "g2", "g3", "g4", "g5"},
        ("modified<2023-01-01",): {"o1"},
        ("type=pdf,text",): {"p1", "p2", "p3", "f1"},
        ("page=2-4",): {"p2", "p3"},
        ("page=1",): {"p1"},
        ("lang=en",): {"g1", "g3", "g4", "g5", "f1", "o1"},
        ("year>=2021",): {"g1", "g2", "p2", "f1", "o1"},
        ("year<2021",): {"g4", "p1"},
        ("year=2021",): {"g1", "g2"},
        ("year=2021", "lang=en", "path=guides/*"): {"g1"},
        ("type=pdf", "year>2020"): {"p2"},
    }
    for exprs, expected in cases.items():
        bound = parse_where(exprs).bind(docs)
        in_python = {cid for cid, meta in metas.items() if bound.matches(meta)}
        in_chroma = set(collection.get(where=bound.where)["ids"])
        assert in_python == in_chroma == expected, exprs


def test_bool_and_number_fields_match_as_in_chroma() -> None:
    # Chroma: {"meta_flag": {"$eq": True}} matches only a stored True, {"$eq": 1} only 1 or 1.0.
    assert not parse_where(["flag=true"]).bind([]).matches({"meta_flag": 1})
    assert not parse_where(["flag=1"]).bind([]).matches({"meta_flag": True})
    assert parse_where(["flag=true"]).bind([]).matches({"meta_flag": True})
    assert parse_where(["n=1"]).bind([]).matches({"meta_n": 1.0})


# -- fusion -----------------------------------------------------------------------------------


def test_reciprocal_rank_fusion_by_hand() -> None:
    # a: 1/61 + 1/62; b: 1/62 + 1/61 (a tie: a was seen first); c: 1/63; d: 1/63 (tie: c first)
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "a", "d"]], 60)
    assert [c for c, _ in fused] == ["a", "b", "c", "d"]
    assert [s for _, s in fused] == pytest.approx([1 / 61 + 1 / 62, 1 / 61 + 1 / 62, 1 / 63, 1 / 63])
    # one list only: its order
    assert reciprocal_rank_fusion([["x", "y"], []], 60) == [("x", pytest.approx(1 / 61)),
                                                            ("y", pytest.approx(1 / 62))]
    # k=1: p 1/2; q 1/3 + 1/3 = 2/3; r 1/2 -> second in both beats first in one; p and r tie, p first
    assert reciprocal_rank_fusion([["p", "q"], ["r", "q"]], 1) == [
        ("q", pytest.approx(2 / 3)), ("p", pytest.approx(1 / 2)), ("r", pytest.approx(1 / 2))]
    assert reciprocal_rank_fusion([], 60) == [] and reciprocal_rank_fusion([[], []], 60) == []


def test_weighted_fusion_by_hand() -> None:
    dense, keyword = [("a", 0.9), ("b", 0.5)], [("b", 3.0), ("c", 1.0)]
    # Candidates a, b, c (dense first). A missing candidate gets the list's minimum:
    #   dense   a 0.9, b 0.5, c 0.5 (filled) -> mean 0.6333, population sd 0.18856
    #           -> z: a +0.26667/0.18856 = sqrt(2), b and c -1/sqrt(2)
    #   keyword a 1.0 (filled), b 3.0, c 1.0 -> z: a -1/sqrt(2), b sqrt(2), c -1/sqrt(2)
    # dense_weight 0.6: a 0.6*1.41421 - 0.4*0.70711 = 0.56569; b -0.6*0.70711 + 0.4*1.41421 = 0.14142;
    #                   c -0.70711
    fused = weighted_fusion(dense, keyword, 0.6)
    assert [c for c, _ in fused] == ["a", "b", "c"]
    assert [s for _, s in fused] == pytest.approx([0.6 * ROOT2 - 0.4 / ROOT2, -0.6 / ROOT2 + 0.4 * ROOT2,
                                                   -1 / ROOT2])
    assert [s for _, s in fused] == pytest.approx([0.56569, 0.14142, -0.70711], abs=1e-5)
    # dense_weight 0.3: a 0.3*1.41421 - 0.7*0.70711 = -0.07071; b -0.3*0.70711 + 0.7*1.41421 = 0.77782
    fused = weighted_fusion(dense, keyword, 0.3)
    assert [c for c, _ in fused] == ["b", "a", "c"]
    assert [s for _, s in fused] == pytest.approx([0.77782, -0.07071, -0.70711], abs=1e-5)
    # dense_weight 0.5: a = b = 0.5*sqrt(2) - 0.5/sqrt(2) = 0.35355; c -0.70711
    assert [s for _, s in weighted_fusion(dense, keyword, 0.5)] == pytest.approx([0.35355, 0.35355, -0.70711],
                                                                                 abs=1e-5)


def test_weighted_fusion_ties_keep_first_appearance() -> None:
    # dense z: a +1, b -1; keyword z: a -1, b +1 -> both exactly 0.0; a came first (dense first)
    assert weighted_fusion([("a", 1.0), ("b", 0.0)], [("b", 1.0), ("a", 0.0)], 0.5) == [("a", 0.0), ("b", 0.0)]
    assert weighted_fusion([("b", 0.0), ("a", 1.0)], [("b", 1.0), ("a", 0.0)], 0.5) == [("b", 0.0), ("a", 0.0)]
    # Only one list: the other contributes 0 (one value everywhere has sd 0).
    # dense a 0.9, b 0.5 -> z +1, -1 -> 0.5 * z
    assert weighted_fusion([("a", 0.9), ("b", 0.5)], [], 0.5) == [("a", pytest.approx(0.5)),
                                                                  ("b", pytest.approx(-0.5))]
    assert weighted_fusion([], [], 0.5) == []
    assert weighted_fusion([], [], 0.5, {}, {"d": 1.0}, 0.3) == []


def test_document_score_can_change_the_order() -> None:
    dense, keyword = [("a", 0.9), ("b", 0.5)], [("b", 3.0), ("c", 1.0)]
    doc_of = {"a": "D1", "b": "D2", "c": "D2"}
    doc_scores = {"D1": 0.0, "D2": 5.0}
    # Without the document score (see above): a 0.56569, b 0.14142, c -0.70711.
    # Documents a D1 0.0, b D2 5.0, c D2 5.0 -> z: a -sqrt(2), b and c +1/sqrt(2); weight 0.5:
    #   a 0.56569 - 0.70711 = -0.14142; b 0.14142 + 0.35355 = 0.49497; c -0.70711 + 0.35355 = -0.35355
    fused = weighted_fusion(dense, keyword, 0.6, doc_of, doc_scores, 0.5)
    assert [c for c, _ in fused] == ["b", "a", "c"]
    assert [s for _, s in fused] == pytest.approx([0.49497, -0.14142, -0.35355], abs=1e-5)
    # document_weight 0, or no document scores: the chunk scores alone.
    plain = weighted_fusion(dense, keyword, 0.6)
    assert weighted_fusion(dense, keyword, 0.6, doc_of, doc_scores, 0.0) == plain
    assert weighted_fusion(dense, keyword, 0.6, doc_of, {}, 0.5) == plain
    # A candidate whose document is unknown scores 0 for its document: c's document missing ->
    # documents a 0, b 5, c 0 -> z: a -1/sqrt(2), b sqrt(2), c -1/sqrt(2); weight 0.5:
    #   a 0.56569 - 0.35355 = 0.21213; b 0.14142 + 0.70711 = 0.84853; c -0.70711 - 0.35355 = -1.06066
    fused = weighted_fusion(dense, keyword, 0.6, {"a": "D1", "b": "D2"}, doc_scores, 0.5)
    assert fused == [("b", pytest.approx(0.84853, abs=1e-5)), ("a", pytest.approx(0.21213, abs=1e-5)),
                     ("c", pytest.approx(-1.06066, abs=1e-5))]


# -- maximal marginal relevance ---------------------------------------------------------------


def test_maximal_marginal_relevance_by_hand() -> None:
    ranked = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
    near = math.sqrt(1 - 0.99**2)
    vectors = {"a": [1.0, 0.0], "b": [0.99, near], "c": [0.0, 1.0]}  # cos(a, b) = 0.99, cos(a, c) = 0
    # Relevance scaled to [0, 1]: a 1.0, b (0.8 - 0.5) / 0.4 = 0.75, c 0.0.
    # Weight 1.0: relevance only -> unchanged.
    assert maximal_marginal_relevance(ranked, vectors, 3, 1.0) == ranked
    # Weight 0.3: first a (0.3 * 1.0 = 0.3 beats 0.225 and 0). Then
    #   b 0.3 * 0.75 - 0.7 * 0.99 = -0.468, c 0.3 * 0 - 0.7 * 0 = 0 -> c, then b.
    assert maximal_marginal_relevance(ranked, vectors, 3, 0.3) == [("a", 0.9), ("c", 0.5), ("b", 0.8)]
    # k picks, then the rest in their original order: every candidate comes back, with its score.
    assert maximal_marginal_relevance(ranked, vectors, 2, 0.3) == [("a", 0.9), ("c", 0.5), ("b", 0.8)]
    assert maximal_marginal_relevance(ranked, vectors, 1, 0.3) == ranked
    # A candidate without a vector keeps its relevance only: b without one is not penalised.
    assert maximal_marginal_relevance(ranked, {"a": [1.0, 0.0], "c": [0.0, 1.0]}, 3, 0.3) == ranked
    assert maximal_marginal_relevance([], vectors, 3, 0.3) == []


# -- keyword index ------------------------------------------------------------------------------

KW_IDS = ["a::0", "a::1", "b::0", "c::0"]
KW_TEXTS = ["Feed the sourdough starter daily with flour and water.",
            "A hungry starter needs feeding twice a day.",
            "Bake the loaf in a hot Dutch oven.",
            "Cool the bread on a rack."]
KW_METAS = [{"doc_id": "a", "index": 0, "title": "Starter", "kind": "markdown", "tokens": 9},
            {"doc_id": "a", "index": 1, "title": "Starter", "kind": "markdown", "meta_lang": "en"},
            {"doc_id": "b", "index": 0, "title": "Baking", "kind": "text"},
            {"doc_id": "c", "index": 0, "title": "Cooling", "kind": "text"}]


def test_document_scores() -> None:
    kw = KeywordIndex.build(KW_IDS, KW_TEXTS, KW_METAS, tag=1.5)
    assert kw.doc_ids == ["a", "b", "c"]
    scores = kw.document_scores("How often do I feed the starter?", ["a", "b", "c", "unknown"])
    assert set(scores) == {"a", "b", "c", "unknown"}
    assert scores["a"] > 0.0  # "feed" and "starter" occur in a (and nowhere else)
    assert scores["b"] == scores["c"] == scores["unknown"] == 0.0
    # More occurrences of the query words, a higher score: "bake" is in b only, "loaf" too.
    more = kw.document_scores("bake loaf oven", ["a", "b", "c"])
    assert more["b"] > more["a"] == more["c"] == 0.0
    # Words the index never saw: 0 everywhere; unknown words do not change a known word's score.
    assert kw.document_scores("xylophone quasar", ["a", "b", "c"]) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert kw.document_scores("xylophone starter", ["a"]) == kw.document_scores("starter", ["a"])
    assert kw.document_scores("the and of", ["a"]) == {"a": 0.0}  # stopwords only
    assert kw.doc_id_of("a::1") == "a" and kw.doc_id_of("nope::0") == ""
    # The chunk index keeps only what filters need.
    assert kw.metas[0] == {"doc_id": "a", "kind": "markdown"} and kw.metas[1]["meta_lang"] == "en"


def test_coverage_weighs_question_words_by_rarity() -> None:
    kw = KeywordIndex.build(KW_IDS, KW_TEXTS, KW_METAS, tag=1.5)
    # 4 chunks (titles included); BM25's IDF ln(1 + (N - df + 0.5) / (df + 0.5)): "feed" and
    # "starter" are in 2 chunks (ln 2 each), "often" in none (ln 10); "how", "do", "I" are
    # question words and do not count.
    idf2, idf0 = math.log(2), math.log(10)
    question = "How often do I feed the starter?"
    assert kw.coverage(question, "Feed the starter") == pytest.approx(2 * idf2 / (2 * idf2 + idf0))
    assert kw.coverage(question, "How often? Feeding starters, often.") == pytest.approx(1.0)  # stems match
    assert kw.coverage(question, "Cool the bread on a rack.") == 0.0
    # "bread" (1 chunk: ln(1 + 3.5 / 1.5)) is found, "quasar" (no chunk: ln 10) is not.
    idf1 = math.log(1 + 3.5 / 1.5)
    assert kw.coverage("bread quasar", "the bread") == pytest.approx(idf1 / (idf1 + idf0))
    assert kw.coverage("how do I", "anything") is None  # nothing to weigh
    assert KeywordIndex.build([], [], [], tag=None).coverage("starter", "starter") is None


def test_evidence_adds_weighted_coverage_to_the_cosine(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    searcher = Searcher(settings)
    hit = searcher.search("How often should I feed my starter?", 1)[0][0]
    covered = searcher.coverage("How often should I feed my starter?", hit)
    assert covered is not None and 0.0 < covered <= 1.0
    assert searcher.evidence("How often should I feed my starter?", hit) == pytest.approx(
        hit.score + settings.retrieval.coverage_weight * covered)
    plain = Searcher(settings.with_values({"retrieval.coverage_weight": 0.0}, "test"))
    assert plain.evidence("How often should I feed my starter?", hit) == hit.score
    # A question about a name no document mentions covers nothing.
    assert searcher.coverage("Who founded Zyxwvut Quasarcorp?", hit) == 0.0


def test_empty_keyword_index() -> None:
    kw = KeywordIndex.build([], [], [], tag=None)
    assert kw.search("starter", 5) == [] and kw.document_scores("starter", ["a"]) == {"a": 0.0}


def test_document_texts_join_chunks_in_order() -> None:
    texts = ["second part", "first part", "other doc", "third part"]
    metas = [{"doc_id": "a", "index": 1, "title": "Title A", "heading": "Intro"},
             {"doc_id": "a", "index": 0, "title": "Title A", "heading": "Intro"},
             {"doc_id": "b", "index": 0, "title": "", "heading": ""},
             {"doc_id": "a", "index": 2, "title": "Title A", "heading": "Intro > Details"}]
    # a: the title once, chunks 0, 1, 2, each new heading once; b has neither title nor heading.
    assert document_texts(texts, metas) == (
        ["a", "b"], ["Title A Intro first part second part Intro > Details third part", "other doc"])


def test_keyword_index_save_and_load(tmp_path: Path) -> None:
    kw = KeywordIndex.build(KW_IDS, KW_TEXTS, KW_METAS, tag=1.5)
    kw.save(tmp_path / "keyword")
    loaded = KeywordIndex.load(tmp_path / "keyword")
    assert loaded is not None
    assert loaded.tag == 1.5 and loaded.ids == kw.ids and loaded.doc_ids == kw.doc_ids and loaded.metas == kw.metas
    for query in ["feed the starter", "bake loaf", "bread rack", "xylophone"]:
        assert loaded.search(query, 3) == kw.search(query, 3)
        assert loaded.document_scores(query, ["a", "b", "c"]) == kw.document_scores(query, ["a", "b", "c"])
    allow = lambda meta: meta["kind"] == "text"  # noqa: E731
    assert loaded.search("starter bread loaf", 4, allow) == kw.search("starter bread loaf", 4, allow)
    assert {c for c, _ in kw.search("starter bread loaf", 4, allow)} == {"b::0", "c::0"}
    # Saving again replaces the folder.
    KeywordIndex.build(KW_IDS[:1], KW_TEXTS[:1], KW_METAS[:1], tag=2.5).save(tmp_path / "keyword")
    again = KeywordIndex.load(tmp_path / "keyword")
    assert again is not None and again.tag == 2.5 and again.doc_ids == ["a"]
    assert KeywordIndex.load(tmp_path / "missing") is None


# -- searching a real index (Chroma + the hash embedder) --------------------------------------

QUESTION = "How often should I feed my sourdough starter with flour and water?"
MODES = [(mode, fusion) for mode in ("dense", "keyword", "hybrid") for fusion in ("weighted", "rrf")]
OLD_DAY = (2001, 2, 3)  # the day the aged fixture's faq.txt was "modified"


def _index_copy(root: Path):
    docs = root / "docs"
    shutil.copytree(SAMPLES, docs)
    settings = settings_in(root, embedding__backend="hash")
    index_paths(settings, [docs])
    return settings, docs


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the samples indexed in .rag (shared by the tests that only read it)."""
    root = tmp_path_factory.mktemp("indexed")
    _index_copy(root)
    return root


@pytest.fixture(scope="module")
def aged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The samples indexed, then faq.txt's mtime moved to 2001-02-03 noon and indexed again."""
    root = tmp_path_factory.mktemp("aged")
    settings, docs = _index_copy(root)
    t = datetime(*OLD_DAY, 12).timestamp()
    os.utime(docs / "faq.txt", (t, t))
    report = index_paths(settings, [docs])
    assert {f.status.value for f in report.files} == {"unchanged"} and report.chunks_written == 0
    return root


def searcher_in(root: Path, **flags) -> Searcher:
    return Searcher(settings_in(root, embedding__backend="hash", **flags))


def assert_scores_are_cosines(searcher: Searcher, question: str, hits: list[Hit]) -> None:
    query = searcher.embedder.embed_query(question)
    stored = searcher.store.fetch([h.chunk_id for h in hits])
    for h in hits:
        cosine = sum(x * y for x, y in zip(query, stored[h.chunk_id][1]))
        assert -1.0 <= h.score <= 1.0
        assert h.score == pytest.approx(cosine, abs=1e-4), h.chunk_id


@pytest.mark.parametrize("mode,fusion", MODES)
def test_filters_apply_inside_every_search(indexed: Path, mode: str, fusion: str) -> None:
    searcher = searcher_in(indexed, retrieval__mode=mode, retrieval__fusion=fusion)

    hits, timings = searcher.search(QUESTION, 3)
    assert len(hits) == 3 and [h.rank for h in hits] == [1, 2, 3] and {"embed", "retrieve"} <= set(timings)
    assert_scores_are_cosines(searcher, QUESTION, hits)

    # Top-k stays full: the filter applies inside the search, not to its top 3.
    hits, _ = searcher.search(QUESTION, 3, parse_where(["path=guides/*"]))
    assert len(hits) == 3 and all(h.doc_id.startswith("guides/") for h in hits)
    assert_scores_are_cosines(searcher, QUESTION, hits)

    # Neither the PDF nor baking-day.md is in the unfiltered top 10: filtering the results
    # afterwards would leave nothing.
    top10, _ = searcher.search(QUESTION, 10)
    assert not [h for h in top10 if h.kind == "pdf" or h.doc_id == "guides/baking-day.md"]
    hits, _ = searcher.search(QUESTION, 3, parse_where(["type=pdf"]))
    assert len(hits) == 3
    assert all(h.kind == "pdf" and h.doc_id == "recipes/country-loaf.pdf" for h in hits)
    assert all(h.page_start is not None and 1 <= h.page_start <= h.page_end <= 3 for h in hits)
    assert_scores_are_cosines(searcher, QUESTION, hits)
    hits, _ = searcher.search(QUESTION, 3, parse_where(["path=*baking-day*"]))
    assert len(hits) == 3 and {h.doc_id for h in hits} == {"guides/baking-day.md"}

    pdf_question = "country loaf bread flour water salt starter dough"
    hits, _ = searcher.search(pdf_question, 3, parse_where(["type=pdf", "page=2"]))
    assert hits and all(h.kind == "pdf" and h.page_start <= 2 <= h.page_end for h in hits)

    assert searcher.search(QUESTION, 3, parse_where(["modified>=2100-01-01"]))[0] == []
    assert searcher.search(QUESTION, 3, parse_where(["path=nowhere/*"]))[0] == []
    # mode given to search() wins over the setting
    assert all(h.kind == "text" for h in searcher.search(QUESTION, 3, parse_where(["type=text"]), mode="dense")[0])


def test_dense_mode_orders_by_cosine(indexed: Path) -> None:
    hits, _ = searcher_in(indexed, retrieval__mode="dense").search(QUESTION, 6)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("mode,fusion", MODES)
def test_modified_filter_uses_the_file_mtime(aged: Path, mode: str, fusion: str) -> None:
    searcher = searcher_in(aged, retrieval__mode=mode, retrieval__fusion=fusion)
    assert dict((d.doc_id, d.mtime_ns) for d in searcher.documents)["faq.txt"] == ns(*OLD_DAY, 12)
    for expr in ("modified<=2001-02-03", "modified=2001-02-03", "modified<2001-02-04"):
        hits, _ = searcher.search(QUESTION, 3, parse_where([expr]))
        assert len(hits) == 3 and {h.doc_id for h in hits} == {"faq.txt"}, expr
        assert_scores_are_cosines(searcher, QUESTION, hits)
    assert searcher.search(QUESTION, 3, parse_where(["modified<2001-02-03"]))[0] == []
    hits, _ = searcher.search(QUESTION, 3, parse_where(["modified>=2001-02-04"]))
    assert len(hits) == 3 and "faq.txt" not in {h.doc_id for h in hits}


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_diversity_returns_k_distinct_hits(indexed: Path, mode: str) -> None:
    searcher = searcher_in(indexed, retrieval__mode=mode, retrieval__diversity=0.5)
    hits, _ = searcher.search(QUESTION, 4)
    assert len(hits) == 4 and len({h.chunk_id for h in hits}) == 4
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert_scores_are_cosines(searcher, QUESTION, hits)
    hits, _ = searcher.search(QUESTION, 4, parse_where(["path=guides/*"]))
    assert len(hits) == 4 and all(h.doc_id.startswith("guides/") for h in hits)


def test_with_neighbours_by_hand(indexed: Path) -> None:
    searcher = searcher_in(indexed)
    store = searcher.store

    def hit(chunk_id: str, score: float) -> Hit:
        stored, _ = store.fetch([chunk_id])[chunk_id]
        return replace(Hit.from_stored(0, stored), score=score)

    s = "guides/starter.md::"  # 15 chunks, 0..14
    hits = [hit(s + "3", 0.9), hit(s + "4", 0.8), hit("README.md::0", 0.7), hit(s + "0", 0.6), hit(s + "14", 0.5)]
    out = with_neighbours(store, hits, 1)
    # 3 brings 2 (4 is a hit already); 4 brings 5 (3 is there); README has one chunk; 0 brings 1;
    # 14 is the last one, it brings 13. Each neighbour carries the score of the hit it neighbours.
    assert [h.chunk_id for h in out] == [s + "3", s + "4", "README.md::0", s + "0", s + "14",
                                         s + "2", s + "5", s + "1", s + "13"]
    assert [h.score for h in out] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.9, 0.8, 0.6, 0.5]
    assert out[:5] == hits and [h.rank for h in out[5:]] == [6, 7, 8, 9]
    assert [h.index for h in out[5:]] == [2, 5, 1, 13] and all(h.text for h in out)
    # Two on each side: 3 brings 1, 2, 5; 4 brings 6; 0 brings nothing new; 14 brings 12, 13.
    out = with_neighbours(store, hits, 2)
    assert [h.chunk_id for h in out[5:]] == [s + "1", s + "2", s + "5", s + "6", s + "12", s + "13"]
    assert with_neighbours(store, hits, 0) == hits and with_neighbours(store, [], 1) == []


def test_with_neighbours_of_real_hits(indexed: Path) -> None:
    searcher = searcher_in(indexed)
    hits, _ = searcher.search(QUESTION, 4)
    out = with_neighbours(searcher.store, hits, 1)
    assert out[:4] == hits
    ids = [h.chunk_id for h in out]
    assert len(ids) == len(set(ids))  # no duplicates
    all_ids = set(searcher.store.all_ids())
    expected = []
    for h in hits:  # the neighbours that exist and are not there yet, in order
        for i in (h.index - 1, h.index + 1):
            cid = f"{h.doc_id}::{i}"
            if cid in all_ids and cid not in [x.chunk_id for x in hits] and cid not in [e[0] for e in expected]:
                expected.append((cid, h.score))
    assert [(h.chunk_id, h.score) for h in out[4:]] == expected


def test_keyword_index_follows_the_store(tmp_path: Path) -> None:
    settings, docs = _index_copy(tmp_path)

    def check() -> set[str]:
        paths = IndexPaths(settings.index_dir)
        saved = KeywordIndex.load(paths.keyword)
        ids, _, metas = ChromaStore(paths.chroma).all_chunks()
        assert saved is not None and set(saved.doc_ids) == {m["doc_id"] for m in metas}
        assert sorted(saved.ids) == sorted(ids)
        manifest = paths.open_manifest()
        try:
            assert saved.tag == manifest.get_meta("updated")  # so Searcher uses it, not a rebuilt one
        finally:
            manifest.close()
        return set(saved.doc_ids)

    assert check() == {"README.md", "faq.txt", "glossary.rst", "guides/baking-day.md", "guides/starter.md",
                       "recipes/country-loaf.pdf"}
    starter = docs / "guides" / "starter.md"
    starter.write_text(starter.read_text() + "\n## Naming your starter\n\nOurs is called Barnaby.\n")
    (docs / "glossary.rst").unlink()
    index_paths(settings, [docs])
    assert check() == {"README.md", "faq.txt", "guides/baking-day.md", "guides/starter.md",
                       "recipes/country-loaf.pdf"}
    searcher = Searcher(settings)
    assert searcher.keyword_index().document_scores("Barnaby", ["guides/starter.md"])["guides/starter.md"] > 0
    assert searcher.keyword_index().search("Barnaby", 3)[0][0].startswith("guides/starter.md::")


# -- cross-encoder reranker (a tiny random BERT built here) -----------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag_cli.model_files import bundled_embedding_dir

    folder = tmp_path_factory.mktemp("models") / "ce"
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_embedding_dir()))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=37, num_labels=1))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_cross_encoder_scores(tiny_cross_encoder: Path) -> None:
    from rag_cli.retrieve.rerank import CrossEncoderReranker

    texts = ["Feed the starter daily.", "Bake at 250 C.", "Cool on a rack for an hour before slicing."]
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    first = reranker.score("How do I feed my starter?", texts)
    assert len(first) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in first)
    assert reranker.score("How do I feed my starter?", texts) == first
    assert CrossEncoderReranker(str(tiny_cross_encoder)).score("How do I feed my starter?", texts) == first
    assert reranker.score("anything", []) == []


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_reranker_orders_the_fused_candidates(indexed: Path, tiny_cross_encoder: Path, mode: str) -> None:
    from rag_cli.retrieve.rerank import CrossEncoderReranker

    plain = searcher_in(indexed, retrieval__mode=mode)
    reranked = searcher_in(indexed, retrieval__mode=mode, retrieval__reranker=str(tiny_cross_encoder),
                           retrieval__rerank_candidates=8)
    hits, timings = reranked.search(QUESTION, 3)
    assert "rerank" in timings

    # The fused top 8 without a reranker, scored by the same model, sorted (stable) by score.
    candidates, _ = plain.search(QUESTION, 8)
    assert len(candidates) == 8
    scores = CrossEncoderReranker(str(tiny_cross_encoder)).score(QUESTION, [c.text for c in candidates])
    expected = [c.chunk_id for c, _ in sorted(zip(candidates, scores), key=lambda p: -p[1])][:3]
    assert [h.chunk_id for h in hits] == expected
    assert expected != [c.chunk_id for c in candidates[:3]]  # the reranker did reorder them
    assert_scores_are_cosines(reranked, QUESTION, hits)  # the score stays the cosine

    # Filters still apply to what is reranked.
    hits, _ = reranked.search(QUESTION, 3, parse_where(["path=guides/*"]))
    assert len(hits) == 3 and all(h.doc_id.startswith("guides/") for h in hits)


def test_missing_reranker_is_a_model_error(indexed: Path) -> None:
    searcher = searcher_in(indexed, retrieval__reranker="/nope")
    with pytest.raises(ModelLoadError, match="/nope"):
        searcher.search(QUESTION, 3)

    result = invoke(["ask", QUESTION, "--retrieve-only"], indexed, RAG_RETRIEVAL_RERANKER="/nope")
    assert result.exit_code == ExitCode.MODEL == 5
    try:
        err = result.stderr
    except ValueError:  # a Click that mixes the streams
        err = result.output
    assert "/nope" in err


# -- embedding prefixes -------------------------------------------------------------------------


def test_embedding_prefixes(tmp_path: Path) -> None:
    from rag_cli.model_files import _RETRIEVAL_INSTRUCTION, bundled_embedding_dir, embedding_prefixes

    assert embedding_prefixes(EmbeddingSettings()) == ("", "")  # the bundled MiniLM, auto
    assert embedding_prefixes(EmbeddingSettings(backend="hash", model="intfloat/e5-small-v2")) == (
        "query: ", "passage: ")
    assert embedding_prefixes(EmbeddingSettings(backend="hash", model="BAAI/bge-small-en-v1.5")) == (
        _RETRIEVAL_INSTRUCTION, "")
    assert _RETRIEVAL_INSTRUCTION == "Represent this sentence for searching relevant passages: "
    assert embedding_prefixes(EmbeddingSettings(backend="hash", model="nomic-ai/nomic-embed-text-v1.5")) == (
        "search_query: ", "search_document: ")
    # Explicit values are kept, each on its own.
    e5 = dict(backend="hash", model="intfloat/e5-small-v2")
    assert embedding_prefixes(EmbeddingSettings(**e5, query_prefix="", document_prefix="")) == ("", "")
    assert embedding_prefixes(EmbeddingSettings(**e5, query_prefix="Q ")) == ("Q ", "passage: ")
    assert embedding_prefixes(EmbeddingSettings(**e5, document_prefix="D ")) == ("query: ", "D ")
    assert embedding_prefixes(EmbeddingSettings(backend="hash", model="some/other", query_prefix="x: ")) == (
        "x: ", "")

    # A local folder's own prompts win, even over a name that looks like e5.
    folder = tmp_path / "my-e5-model"
    shutil.copytree(bundled_embedding_dir(), folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    (folder / "config_sentence_transformers.json").write_text('{"prompts": {"query": "Q: ", "document": "D: "}}')
    local = EmbeddingSettings(backend="sentence-transformers", model=str(folder))
    assert embedding_prefixes(local) == ("Q: ", "D: ")
    # A relative folder is taken from base_dir.
    relative = EmbeddingSettings(backend="sentence-transformers", model="my-e5-model")
    assert embedding_prefixes(relative, tmp_path) == ("Q: ", "D: ")
    assert embedding_prefixes(EmbeddingSettings(backend="sentence-transformers", model=str(folder),
                                                document_prefix="")) == ("Q: ", "")
    # Without prompts in the folder, the name decides.
    (folder / "config_sentence_transformers.json").write_text('{"prompts": {}}')
    assert embedding_prefixes(local) == ("query: ", "passage: ")
