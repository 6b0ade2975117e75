"""Quoted evidence: each sentence of an answer tied to a span of a document, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_cli.ask import Asker
from rag_cli.generate.evidence import drop_unsupported, faithfulness, quote
from rag_cli.indexer import index_paths
from rag_cli.ingest.formats import loader_for
from rag_cli.models import Answer, Document, Evidence, Hit
from rag_cli.testing.fakes import ScriptedGenerator
from tests.indexing_helpers import invoke as cli, settings_in

DOC = ("Intro.\n\nThe Denver Broncos defeated the Carolina Panthers 24–10 to earn their third Super Bowl "
       "title. The game was played on February 7, 2016, at Levi's Stadium in Santa Clara, California, the "
       "home of the 49ers.\n\nTickets sold out in a day.")


def hit(doc: str, start: int, end: int, index: int = 0, **extra) -> Hit:
    return Hit(rank=index + 1, chunk_id=f"d.md::{index}", doc_id="d.md", source="/docs/d.md", kind="markdown",
               text=doc[start:end], score=0.5, index=index, start=start, end=end, **extra)


def reload(path: str, doc_id: str) -> Document:
    """The document as its loader reads it again from its file."""
    loader = loader_for(Path(path))
    assert loader is not None
    return next(d for d in loader.load(Path(path), doc_id).documents if d.doc_id == doc_id)


def test_each_sentence_is_quoted_at_offsets_into_the_document() -> None:
    chunks = [hit(DOC, 8, 206, index=0, page_start=3, page_end=3, heading="Game"), hit(DOC, 208, len(DOC), index=1)]
    answer = "The Denver Broncos won the Super Bowl [1]. It was played at Levi's Stadium. Tickets sold out."
    broncos, stadium, tickets = quote(answer, chunks, min_score=0.5)
    for e in (broncos, stadium, tickets):
        assert e.supported and e.start is not None and e.end is not None
        assert DOC[e.start:e.end] == e.text
    assert broncos.sentence == "The Denver Broncos won the Super Bowl [1]."
    assert broncos.text.startswith("The Denver Broncos defeated") and broncos.text.endswith("title.")
    assert (broncos.page_start, broncos.page_end, broncos.heading) == (3, 3, "Game")
    # Cut to the clauses that hold the sentence's words: not Santa Clara's state or the 49ers.
    assert "Levi's Stadium" in stadium.text and "49ers" not in stadium.text and stadium.score == 1.0
    assert tickets.chunk_id == "d.md::1" and tickets.text == "Tickets sold out in a day."


def test_a_sentence_no_span_supports_is_unsupported_and_has_no_span() -> None:
    chunks = [hit(DOC, 0, len(DOC))]
    evidence = quote("Bananas are purple. Yes. The Broncos won.", chunks, min_score=0.5)
    assert [e.sentence for e in evidence] == ["Bananas are purple.", "The Broncos won."]  # "Yes." has no words
    bananas, broncos = evidence
    assert not bananas.supported and bananas.start is None and bananas.text == "" and bananas.chunk_id == ""
    assert broncos.supported and broncos.score == 0.5  # "broncos" is in the text, "won" is not
    assert quote("Bananas are purple.", chunks, min_score=0.0)[0].supported is False  # no shared word at all
    assert not quote("The Broncos won.", chunks, min_score=0.6)[0].supported


def test_two_adjacent_sentences_when_the_second_adds_words() -> None:
    text = "Alpha beta gamma here. Delta epsilon there. Unrelated words only."
    (e,) = quote("Alpha beta delta epsilon.", [hit(text, 0, len(text))], min_score=0.5)
    assert e.text == "Alpha beta gamma here. Delta epsilon there." and e.score == 1.0


def test_drop_and_faithfulness_follow_the_spans() -> None:
    chunks = [hit(DOC, 0, len(DOC))]
    answer = "The Broncos beat the Panthers. Bananas are purple and tasty."
    evidence = quote(answer, chunks, min_score=0.5)
    assert drop_unsupported(answer, evidence) == "The Broncos beat the Panthers."
    # broncos, panthers (beat is not in the text: 2 of 3) weighed 3; bananas, purple, tasty: 0 of 3.
    assert faithfulness(evidence) == pytest.approx((3 * 2 / 3) / 6)
    assert drop_unsupported("Bananas are purple.", quote("Bananas are purple.", chunks, min_score=0.5)) == ""
    assert faithfulness(()) == 0.0


def test_evidence_survives_json_and_the_answer_cache_shape() -> None:
    e = Evidence(sentence="S.", supported=True, score=0.75, doc_id="d", chunk_id="d::0", path="/d", page_start=2,
                 page_end=2, heading="H", start=10, end=20, text="0123456789")
    answer = Answer(question="q", answer="S.", refused=False, refusal_reason="", citations=(), passages=(),
                    model="m", route="", prompt_tokens=1, completion_tokens=1, timings={}, evidence=(e,))  # type: ignore[arg-type]
    again = Answer.from_dict(json.loads(json.dumps(answer.to_dict())))
    assert again.evidence == (e,)
    unsupported = Evidence(sentence="T.", supported=False, score=0.0)
    assert Evidence.from_dict(json.loads(json.dumps(unsupported.to_dict()))) == unsupported


@pytest.fixture
def hash_index(tmp_path: Path, samples: Path):
    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.0)
    index_paths(settings, [samples])
    return settings


QUESTION = "How often should I feed my starter?"


def grounded(settings) -> str:
    """An answer of two sentences: the first of the first source the model is given, and one
    that no document holds."""
    probe = Asker(settings, generators={"bundled": ScriptedGenerator("Probe.")}).ask(QUESTION, use_cache=False)
    first = " ".join(probe.citations[0].text.split()).split(". ")[0].rstrip(".")
    return f"{first} [1]. Bananas are purple and tasty."


def test_asked_answers_carry_spans_of_the_documents_and_the_cache_keeps_them(hash_index) -> None:
    settings = hash_index.with_values({"ask.min_support": 0.0}, "test")
    text = grounded(settings)
    asker = Asker(settings, generators={"bundled": ScriptedGenerator(text)})
    answer = asker.ask(QUESTION)
    assert answer.answer == text  # mark: the unsupported sentence is kept
    feed, bananas = answer.evidence
    assert feed.supported and not bananas.supported and "evidence" in answer.timings
    assert reload(feed.path, feed.doc_id).text[feed.start:feed.end] == feed.text  # type: ignore[misc]
    assert any(c.chunk_ids and feed.chunk_id in c.chunk_ids for c in answer.citations)
    cached = asker.ask(QUESTION)
    assert cached.cached and cached.evidence == answer.evidence


def test_drop_leaves_out_unsupported_sentences_and_refuses_an_answer_left_empty(hash_index) -> None:
    drop = hash_index.with_values({"ask.min_support": 0.0, "ask.unsupported": "drop"}, "test")
    text = grounded(drop)
    answer = Asker(drop, generators={"bundled": ScriptedGenerator(text)}).ask(QUESTION, use_cache=False)
    assert answer.answer == text.split(" Bananas")[0] and not answer.refused
    assert [e.supported for e in answer.evidence] == [True]
    nothing = Asker(drop, generators={"bundled": ScriptedGenerator("Bananas are purple and tasty.")}).ask(
        QUESTION, use_cache=False)
    assert nothing.refused and nothing.refusal_reason == "unsupported" and nothing.evidence == ()
    assert not any(c.cited for c in nothing.citations)


def test_a_refusal_carries_no_evidence(hash_index) -> None:
    refusal = hash_index.prompt.refusal
    answer = Asker(hash_index, generators={"bundled": ScriptedGenerator(refusal)}).ask(QUESTION, use_cache=False)
    assert answer.refused and answer.evidence == () and answer.to_dict()["evidence"] == []


def test_piped_evidence_prints_the_quotes_under_the_answer(hash_index) -> None:
    import io

    from rag_cli.cli.env import Env
    from rag_cli.cli.render import render_answer

    settings = hash_index.with_values({"ask.min_support": 0.0}, "test")
    gen = ScriptedGenerator(grounded(settings))
    answer = Asker(settings, generators={"bundled": gen}).ask(QUESTION, use_cache=False)
    out, err = io.StringIO(), io.StringIO()
    env = Env(stdout=out, stderr=err)
    render_answer(env, answer, as_json=False, streamed=False, evidence=True)
    text = out.getvalue()
    feed = answer.evidence[0]
    assert text.splitlines()[0] == answer.answer
    assert f"“{' '.join(feed.text.split())}”" in text and f"chars {feed.start}-{feed.end}" in text
    assert "unsupported: Bananas are purple and tasty." in text


def test_cli_json_carries_the_evidence(tmp_path: Path, samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    assert cli(["ask", "--help"], tmp_path).stdout.count("--evidence") == 1
    result = cli(["ask", "flour water salt starter", "--retrieve-only", "--json", "--evidence"], tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["evidence"] == []  # no answer, nothing quoted


# -- the real models -------------------------------------------------------------------------

REAL_QUESTIONS = [
    "How often should I feed my starter?",
    "What is the hydration of the country loaf dough?",
    "How long is the bulk fermentation of the country loaf?",
    "How much salt goes into the country loaf?",
    "What is an autolyse?",
]


@pytest.mark.slow
def test_real_model_spans_equal_the_documents_text_markdown_and_pdf(tmp_path: Path, samples: Path,
                                                                   real_embedder) -> None:
    settings = settings_in(tmp_path)
    index_paths(settings, [samples], embedder=real_embedder)
    from rag_cli.retrieve.search import Searcher

    asker = Asker(settings, searcher=Searcher(settings, embedder=real_embedder))
    checked, pdf = 0, 0
    for question in REAL_QUESTIONS:
        answer = asker.ask(question, use_cache=False)
        assert answer.error is None, answer.error
        if answer.refused:
            assert answer.evidence == ()
            continue
        assert answer.evidence, answer.answer  # every answer with words is quoted
        for e in answer.evidence:
            if not e.supported:
                continue
            doc = reload(e.path, e.doc_id)
            assert e.start is not None and e.end is not None
            assert doc.text[e.start:e.end] == e.text
            if doc.page_starts:
                pdf += 1
                assert e.page_start is not None and e.page_end is not None
                assert e.page_start <= doc.page_at(e.start) <= e.page_end  # type: ignore[operator]
            checked += 1
    assert checked >= 3 and pdf >= 1
