"""`rag ask` with the real index: fakes for the model in fast tests, the real GGUF end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag_cli.ask import Asker
from rag_cli.errors import ExitCode, IndexNotFound, InputError, ModelLoadError
from rag_cli.indexer import index_paths
from rag_cli.retrieve.filters import parse_where
from rag_cli.testing.fakes import ScriptedGenerator
from tests.conftest import SHARED_EVAL
from tests.indexing_helpers import invoke as cli, settings_in

QUESTION = "How often should I feed my starter?"


@pytest.fixture
def hash_index(tmp_path: Path, samples: Path):
    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.0)
    index_paths(settings, [samples])
    return settings


def test_answer_cites_existing_sources_and_drops_invented_ones(hash_index) -> None:
    gen = ScriptedGenerator("Feed it once every 24 hours [1], weekly in the fridge [9].")
    settings = hash_index.with_values({"ask.min_support": 0.0}, "test")  # the support check is tested below
    answer = Asker(settings, generators={"bundled": gen}).ask(QUESTION, use_cache=False)
    assert not answer.refused and answer.error is None
    assert answer.answer == "Feed it once every 24 hours [1], weekly in the fridge."
    assert answer.removed_citations == 1
    assert [c.number for c in answer.citations if c.cited] == [1]
    assert answer.model == "scripted" and answer.route == "default"
    assert set(answer.timings) >= {"embed", "retrieve", "generate", "total"}
    system, user = gen.calls[0]
    assert QUESTION in user["content"] and '<source id="1"' in user["content"]


def test_an_answer_the_sources_do_not_support_is_replaced_by_their_closest_sentence(hash_index) -> None:
    gen = ScriptedGenerator('<script type="text/javascript"></script>')  # what SmolLM2 once produced
    answer = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION, use_cache=False)
    assert answer.extracted and not answer.refused and answer.error is None
    cited = [c for c in answer.citations if c.cited]
    assert len(cited) == 1 and " ".join(cited[0].text.split()).find(answer.answer) >= 0  # a sentence of it
    assert "extract" in answer.timings and answer.to_dict()["extracted"] is True
    grounded = Asker(hash_index, generators={"bundled": ScriptedGenerator(cited[0].text[:200])}).ask(
        QUESTION, use_cache=False)
    assert not grounded.extracted  # text taken from the sources is kept as the model wrote it
    off = hash_index.with_values({"ask.min_support": 0.0}, "test")
    kept = Asker(off, generators={"bundled": ScriptedGenerator("<script></script>")}).ask(QUESTION, use_cache=False)
    assert kept.answer == "<script></script>" and not kept.extracted


def test_a_completion_model_gets_one_prompt_and_its_answer_is_credited(hash_index) -> None:
    # a base model continues the text: here it copies the first words of the first source
    gen = ScriptedGenerator(lambda messages: " ".join(messages[0]["content"].split()[:8]), style="completion")
    answer = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION, use_cache=False)
    (prompt,) = gen.calls[0]
    assert prompt["role"] == "prompt" and prompt["content"].endswith("Short answer:")
    assert "<source" not in prompt["content"] and QUESTION in prompt["content"]
    assert len(answer.citations) == hash_index.prompt.completion_sources
    first = answer.citations[0]
    assert not answer.extracted and answer.answer == " ".join(first.text.split()[:8])
    assert first.cited  # no [n] in a completion answer: credited to the source that holds it


def test_low_retrieval_scores_refuse_without_calling_the_model(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.99)
    index_paths(settings, [samples])
    gen = ScriptedGenerator("should not be called")
    answer = Asker(settings, generators={"bundled": gen}).ask("Quantum chromodynamics of gluons?")
    assert answer.refused and answer.refusal_reason == "low_score" and gen.calls == []
    assert answer.answer == settings.prompt.refusal


def test_model_refusal_is_recognised(hash_index) -> None:
    gen = ScriptedGenerator("I don't know: the documents do not say.")
    answer = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION, use_cache=False)
    assert answer.refused and answer.refusal_reason == "model" and not any(c.cited for c in answer.citations)


def test_model_failure_degrades_to_passages(hash_index) -> None:
    gen = ScriptedGenerator(fail=ModelLoadError("cannot load model /x.gguf: bad magic"))
    answer = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION, use_cache=False)
    assert answer.error and "bad magic" in answer.error
    assert answer.passages and answer.answer == ""


def test_retrieve_only_loads_no_model(hash_index) -> None:
    gen = ScriptedGenerator(fail=AssertionError("a model was used"))
    answer = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION, retrieve_only=True)
    assert answer.passages and answer.model is None and not answer.refused


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_filters_apply_inside_the_search(hash_index, mode: str) -> None:
    settings = hash_index.with_values({"retrieval.mode": mode}, "test")
    asker = Asker(settings, generators={"bundled": ScriptedGenerator()})
    pdf_only = asker.ask("flour water salt", where=parse_where(["type=pdf"]), retrieve_only=True)
    assert pdf_only.passages and {p["doc_id"] for p in pdf_only.passages} == {"recipes/country-loaf.pdf"}
    page3 = asker.ask("flour water salt", where=parse_where(["path=recipes/*", "page=3"]), retrieve_only=True)
    assert page3.passages and all(p["page_start"] <= 3 <= p["page_end"] for p in page3.passages)
    guides = asker.ask("flour", where=parse_where(["path=guides/*.md"]), retrieve_only=True)
    assert len(guides.passages) == hash_index.retrieval.top_k
    assert all(p["doc_id"].startswith("guides/") for p in guides.passages)


def test_cache_answers_repeats_and_any_index_change_invalidates_it(hash_index, samples: Path) -> None:
    gen = ScriptedGenerator("Daily [1].")
    first = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION)
    second = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION)
    assert not first.cached and second.cached and second.answer == first.answer and len(gen.calls) == 1
    assert not Asker(hash_index, generators={"bundled": gen}).ask(QUESTION, use_cache=False).cached
    (samples / "faq.txt").write_text((samples / "faq.txt").read_text() + "\nQ: Rye?\nA: Yes.\n")
    index_paths(hash_index, [samples])
    third = Asker(hash_index, generators={"bundled": gen}).ask(QUESTION)
    assert not third.cached and len(gen.calls) == 3


def test_no_index_and_empty_question(tmp_path: Path, hash_index) -> None:
    with pytest.raises(IndexNotFound):
        Asker(settings_in(tmp_path / "elsewhere" if (tmp_path / "elsewhere").mkdir() is None else tmp_path))
    with pytest.raises(InputError):
        Asker(hash_index, generators={"bundled": ScriptedGenerator()}).ask("   ")


# -- the command line -------------------------------------------------------------------

def test_cli_json_shape_is_pinned(tmp_path: Path, samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    result = cli(["ask", "flour water salt starter", "--retrieve-only", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "rag-cli/answer/v1"
    assert set(data) == {"schema", "question", "answer", "refused", "refusal_reason", "citations", "sources",
                         "passages", "model", "route", "tokens", "timings", "removed_citations", "cached", "error",
                         "error_code", "extracted", "evidence", "run_id"}  # run_id: rag_cli.observe.run_id
    assert set(data["passages"][0]) == {"chunk_id", "doc_id", "path", "kind", "page_start", "page_end", "ocr",
                                        "heading", "score", "text"}
    assert set(data["tokens"]) == {"prompt", "completion"} and set(data["timings"]) >= {"embed", "retrieve", "total"}


def test_cli_exit_codes(tmp_path: Path, samples: Path) -> None:
    assert cli(["ask", "anything"], tmp_path).exit_code == ExitCode.INDEX  # no index yet
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    refused = cli(["ask", "zzz qqq xxyyzz"], tmp_path, RAG_RETRIEVAL_MIN_SCORE="0.99")
    assert refused.exit_code == ExitCode.REFUSED and refused.stdout.strip() == "I don't know: the documents do not say."
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(64))
    degraded = cli(["ask", "flour water salt", "--model", str(broken), "--no-cache"], tmp_path,
                   RAG_RETRIEVAL_MIN_SCORE="0")
    assert degraded.exit_code == ExitCode.MODEL
    assert "no generated answer" in degraded.stderr and "[1]" in degraded.stdout
    not_gguf = cli(["ask", "flour", "--model", str(samples / "faq.txt")], tmp_path, RAG_RETRIEVAL_MIN_SCORE="0")
    assert not_gguf.exit_code == ExitCode.MODEL and "not a GGUF" in not_gguf.stderr
    assert cli(["ask", "flour", "--where", "type=odt"], tmp_path).exit_code == ExitCode.USAGE
    assert cli(["ask", ""], tmp_path).exit_code == ExitCode.USAGE


def test_cli_question_from_stdin(tmp_path: Path, samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    result = cli(["ask", "-", "--retrieve-only", "--json"], tmp_path, input="flour water salt\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["question"] == "flour water salt"


# -- the real models ----------------------------------------------------------------------

@pytest.mark.slow
def test_real_model_answers_from_the_samples_and_cites_them(tmp_path: Path, samples: Path, real_embedder) -> None:
    settings = settings_in(tmp_path)
    index_paths(settings, [samples], embedder=real_embedder)
    from rag_cli.retrieve.search import Searcher

    asker = Asker(settings, searcher=Searcher(settings, embedder=real_embedder))
    answer = asker.ask(QUESTION, use_cache=False)
    assert answer.error is None and not answer.refused, answer
    assert answer.model == "gemma-3-270m-q4_k_m.gguf" and answer.completion_tokens > 0  # the default
    assert any(c.cited and c.doc_id == "guides/starter.md" for c in answer.citations)
    assert "24 hours" in answer.answer
    off_topic = asker.ask("Who won the 1998 FIFA World Cup final?", use_cache=False)
    assert off_topic.refused and off_topic.refusal_reason == "low_score"


@pytest.mark.slow
def test_real_squad_answer_and_refusal_through_a_real_pipe(tmp_path: Path) -> None:
    docs = tmp_path / "squad"
    docs.mkdir()
    for name in ("00_Super_Bowl_50.md", "11_Steam_engine.md"):
        shutil.copy(SHARED_EVAL / "squad" / "docs" / name, docs / name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rag = [sys.executable, "-m", "rag_cli"]
    assert subprocess.run([*rag, "index", str(docs)], cwd=tmp_path, env=env, capture_output=True,
                          timeout=600).returncode == 0
    done = subprocess.run([*rag, "ask", "Which NFL team represented the AFC at Super Bowl 50?"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "\x1b[" not in done.stdout
    assert "Sources" not in done.stdout  # piped: only the answer
    cited = subprocess.run([*rag, "ask", "Which NFL team represented the AFC at Super Bowl 50?", "--json"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    data = json.loads(cited.stdout)
    assert data["cached"] and {c["doc_id"] for c in data["citations"]} == {"00_Super_Bowl_50.md"}
    unanswerable = next(json.loads(line) for line in (SHARED_EVAL / "squad" / "questions.jsonl").open()
                        if '"answerable": false' in line)
    refused = subprocess.run([*rag, "ask", unanswerable["question"]], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == ExitCode.REFUSED, (refused.stdout, refused.stderr)


def test_an_unchanged_reindex_keeps_the_cache(hash_index, samples: Path) -> None:
    gen = ScriptedGenerator("Daily [1].")
    Asker(hash_index, generators={"bundled": gen}).ask(QUESTION)
    index_paths(hash_index, [samples])  # nothing changed
    assert Asker(hash_index, generators={"bundled": gen}).ask(QUESTION).cached


@pytest.mark.slow
def test_on_a_terminal_the_answer_streams_and_sources_follow(tmp_path: Path, samples: Path) -> None:
    import pty

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    rag = [sys.executable, "-m", "rag_cli"]
    assert subprocess.run([*rag, "index", str(samples)], cwd=tmp_path, env=env, capture_output=True,
                          timeout=600).returncode == 0
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*rag, "ask", QUESTION], cwd=tmp_path, env=env, stdout=follower,
                            stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, proc.stderr.read()
    assert "Sources" in screen and "guides/starter.md" in screen


@pytest.mark.slow
def test_sec_filing_and_page_are_cited(tmp_path: Path, real_embedder) -> None:
    """Apple's 10-Q filings look alike to vectors; the question names the quarter's end date,
    which the keyword side of hybrid search finds."""
    docs = tmp_path / "sec"
    docs.mkdir()
    for name in ("2023 Q1 AAPL.pdf", "2023 Q2 AAPL.pdf", "2023 Q3 AAPL.pdf"):
        shutil.copy(SHARED_EVAL / "sec10q" / "docs" / name, docs / name)
    settings = settings_in(tmp_path)
    index_paths(settings, [docs], embedder=real_embedder)
    from rag_cli.retrieve.search import Searcher

    asker = Asker(settings, searcher=Searcher(settings, embedder=real_embedder))
    question = "What were Apple's total net sales for the quarter ended April 1, 2023?"
    top = asker.ask(question, retrieve_only=True).passages[0]
    # Pages 4 (statement of operations) and 10 (net sales by category) both state the total.
    assert top["doc_id"] == "2023 Q2 AAPL.pdf" and top["page_start"] in (4, 10) and "94,836" in top["text"]
    answer = asker.ask(question, use_cache=False)
    assert not answer.refused and answer.error is None
    cited = [c for c in answer.citations if c.cited]
    assert cited and all(c.doc_id == "2023 Q2 AAPL.pdf" for c in cited)
    assert any(c.page_start in (4, 10) for c in cited) and "94,836" in answer.answer


def test_asking_with_another_embedding_setup_is_refused(hash_index) -> None:
    from rag_cli.errors import IndexMismatch
    from rag_cli.retrieve.search import Searcher

    with pytest.raises(IndexMismatch, match="embedding.query_prefix") as err:
        Searcher(hash_index.with_values({"embedding.query_prefix": "query: "}, "test"))
    assert "rag index --rebuild" in (err.value.hint or "")
    Searcher(hash_index.with_values({"chunking.size": 100}, "test"))  # chunking does not matter to a search


def test_cached_answers_follow_file_dates(tmp_path: Path, samples: Path) -> None:
    """A `modified` filter depends on file mtimes: re-dating a file (content unchanged) must not
    serve an answer cached before."""
    import datetime
    import os

    from rag_cli.retrieve.filters import parse_where

    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.0)
    index_paths(settings, [samples])
    where = parse_where(["modified<=2001-02-03"])
    gen = ScriptedGenerator("Feed it daily.")
    first = Asker(settings, generators={"bundled": gen}).ask(QUESTION, where=where)
    assert first.refused and first.refusal_reason == "no_passages"
    noon = datetime.datetime(2001, 2, 3, 12).timestamp()
    os.utime(samples / "faq.txt", (noon, noon))
    index_paths(settings, [samples])
    second = Asker(settings, generators={"bundled": gen}).ask(QUESTION, where=where)
    assert not second.cached and second.passages and {p["doc_id"] for p in second.passages} == {"faq.txt"}


@pytest.mark.slow
def test_real_models_get_the_prompt_style_they_were_trained_for(tmp_path: Path, samples: Path,
                                                                real_embedder) -> None:
    """Gemma 3 270M base (the default; no chat template) continues the completion prompt;
    SmolLM2-135M-Instruct gets chat messages through its template."""
    from rag_cli.generate.llama import LlamaCppGenerator
    from rag_cli.retrieve.search import Searcher

    settings = settings_in(tmp_path)
    index_paths(settings, [samples], embedder=real_embedder)
    asker = Asker(settings, searcher=Searcher(settings, embedder=real_embedder))
    answer = asker.ask(QUESTION, use_cache=False)
    generator = asker.generators["bundled"]
    assert isinstance(generator, LlamaCppGenerator) and generator.style == "completion"
    assert answer.error is None and answer.model == "gemma-3-270m-q4_k_m.gguf" and answer.completion_tokens > 0
    assert answer.answer and "\n" not in answer.answer
    chat = asker.ask(QUESTION, model="smollm2", use_cache=False)
    assert asker.generators["smollm2"].style == "chat"
    assert chat.error is None and chat.model == "SmolLM2-135M-Instruct.Q4_1.gguf" and chat.completion_tokens > 0
    assert any(c.cited for c in chat.citations)


class LoadRecorder(ScriptedGenerator):
    """Records when its (background) load is started and waited for, relative to retrieval."""

    def __init__(self, events: list[str], **kw) -> None:
        super().__init__(**kw)
        self.events = events

    def start_warm_up(self) -> None:
        self.events.append("start loading")

    def settle(self) -> None:
        self.events.append("settled")


def test_the_model_loads_beside_retrieval_and_is_waited_for(hash_index, monkeypatch) -> None:
    events: list[str] = []
    settings = hash_index.with_values({"ask.min_support": 0.0, "ask.cache": False, "retrieval.min_score": 0.5}, "test")
    asker = Asker(settings, generators={"bundled": LoadRecorder(events, reply="Once every 24 hours [1].")})
    search = asker.searcher.search
    monkeypatch.setattr(asker.searcher, "search", lambda *a, **k: (events.append("search"), search(*a, **k))[1])
    asker.ask(QUESTION)
    assert events == ["start loading", "search", "settled"]
    events.clear()
    refused = asker.ask("zzz qqq xxyyzz", retrieve_only=False)  # nothing in the documents holds it
    assert refused.refused and events[-1] == "settled", \
        "a refusal waits for the load too (llama.cpp silences output while loading)"
    events.clear()
    asker.ask(QUESTION, retrieve_only=True)
    assert "start loading" not in events
    strong = Asker(settings.with_values({"llm.strong_model": "other"}, "test"),
                   generators={"bundled": LoadRecorder(events), "other": LoadRecorder(events)})
    events.clear()
    strong.ask(QUESTION)
    assert "start loading" not in events, "with routing, the model is known only after retrieval"
