"""`rag eval`: metrics against hand-computed cases, question files, runs, comparisons and gates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rag_cli.ask import Asker
from rag_cli.errors import ExitCode, InputError
from rag_cli.evaluate import metrics as m
from rag_cli.evaluate.dataset import load_questions, select
from rag_cli.evaluate.runner import gate, run_eval
from rag_cli.indexer import index_paths
from rag_cli.testing.fakes import ScriptedGenerator
from tests.indexing_helpers import invoke as cli, settings_in


def test_retrieval_metrics_by_hand() -> None:
    ranked = ["a", "x", "b", "y", "z"]
    rel = {"a", "b"}
    assert m.hit_at(ranked, rel, 1) == 1.0 and m.hit_at(["x", "a"], rel, 1) == 0.0
    assert m.recall_at(ranked, rel, 1) == 0.5 and m.recall_at(ranked, rel, 3) == 1.0
    assert m.mrr_at(["x", "y", "b"], rel, 10) == pytest.approx(1 / 3)
    assert m.mrr_at(["x"] * 10 + ["a"], rel, 10) == 0.0
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    assert m.ndcg_at(ranked, rel, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert m.ndcg_at(["a", "b"], rel, 10) == pytest.approx(1.0)
    assert m.ndcg_at(["x", "y"], rel, 10) == 0.0
    # one relevant document at rank 2 of 10: 1/log2(3)
    assert m.ndcg_at(["x", "a"], {"a"}, 10) == pytest.approx(1 / math.log2(3))
    assert m.ranked_documents(["d1", "d2", "d1", "d3"]) == ["d1", "d2", "d3"]


def test_answer_metrics_follow_squad() -> None:
    assert m.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert m.exact_match("the Denver Broncos.", ["Denver Broncos"]) == 1.0
    assert m.exact_match("Broncos", ["Denver Broncos"]) == 0.0
    # pred "denver won" vs gold "denver broncos": 1 common, P = 1/2, R = 1/2 -> F1 = 0.5
    assert m.token_f1("Denver won", ["Denver Broncos"]) == pytest.approx(0.5)
    assert m.token_f1("", ["Denver Broncos"]) == 0.0
    assert m.token_f1("Carolina", ["Denver Broncos", "Carolina"]) == 1.0
    assert m.contains("It was the Denver Broncos [1].", ["Denver Broncos"]) == 1.0
    assert m.token_recall("net sales were 94,836", ["Total net sales were 94,836 million"]) == pytest.approx(4 / 6)
    assert m.percentile([1, 2, 3, 4], 50) == 2.5 and m.percentile([5], 95) == 5 and m.percentile([], 50) == 0.0


def write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("line,message", [
    ("{not json", "not valid JSON"), ('["a"]', "not a JSON object"), ('{"question": "q"}', "no 'id'"),
    ('{"id": 1}', "no 'question'"), ('{"id": 1, "question": "q", "answers": "x"}', "list of strings"),
    ('{"id": 1, "question": "q", "answerable": "no"}', "true or false"),
])
def test_malformed_question_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "q.jsonl", [{"id": "ok", "question": "fine?"}, line])
    with pytest.raises(InputError) as err:
        load_questions(path)
    assert f"{path}:2" in err.value.message and message in err.value.message


def test_selection_is_deterministic(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", [{"id": i, "question": f"q{i}?"} for i in range(50)])
    qs = load_questions(path)
    assert [q.qid for q in select(qs, limit=3)] == ["0", "1", "2"]
    a, b = select(qs, sample=10, seed=7), select(qs, sample=10, seed=7)
    assert a == b and len(a) == 10 and [int(q.qid) for q in a] == sorted(int(q.qid) for q in a)
    assert select(qs, sample=10, seed=8) != a


QUESTIONS = [
    {"id": "feed", "question": "How often should I feed my starter at room temperature?",
     "answers": ["once every 24 hours"], "relevant": ["guides/starter.md"]},
    {"id": "autolyse", "question": "Who coined the term autolyse?", "answers": ["Raymond Calvel"],
     "relevant": ["glossary.rst"]},
    {"id": "none", "question": "What is the boiling point of liquid nitrogen?", "answerable": False},
]


def test_run_with_a_scripted_model(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.0)
    index_paths(settings, [samples])
    qs = load_questions(write(tmp_path / "q.jsonl", QUESTIONS))

    def reply(messages):
        return "I don't know." if "nitrogen" in messages[-1]["content"] else "Raymond Calvel [1] [9]"

    asker = Asker(settings, generators={"bundled": ScriptedGenerator(reply)})
    report = run_eval(settings, qs, asker=asker, ks=(1, 5))
    assert report.counts == {"questions": 3, "with_relevant": 2, "answerable": 2, "unanswerable": 1, "errors": 0,
                             "unavailable": 0, "removed_citations": 2}
    rows = {r["id"]: r for r in report.rows}
    assert rows["autolyse"]["em"] == 1.0 and rows["feed"]["em"] == 0.0
    assert report.metrics["em"] == 0.5 and report.metrics["refused_unanswerable"] == 1.0
    assert report.metrics["refused_answerable"] == 0.0
    assert 0.0 <= report.metrics["ndcg@10"] <= 1.0 and "recall@5" in report.metrics
    assert report.metrics["citation_validity"] == pytest.approx(0.5)  # one kept, one removed per answer
    # The right document cited: autolyse's answer is the glossary's own words; feed's (the same
    # reply) is not in the starter guide, so the guide's sentence closest to the question stands in.
    assert rows["autolyse"]["cited_relevant"] == 1.0 and rows["autolyse"]["answer"] == "Raymond Calvel"
    assert rows["autolyse"]["faithfulness"] == 1.0  # its quote holds both its words (generate.evidence)
    assert "cited_relevant" not in rows["none"]
    assert set(report.latency) >= {"embed", "retrieve", "generate", "total"}
    assert report.to_dict()["schema"] == "rag-cli/eval-report/v1"


def test_gate_flags_drops_beyond_the_allowance() -> None:
    from rag_cli.evaluate.runner import EvalReport

    report = EvalReport("x", "q", True, {}, metrics={"ndcg@10": 0.70, "recall@5": 0.79, "refused_answerable": 0.2})
    baseline = {"metrics": {"ndcg@10": 0.73, "recall@5": 0.80, "refused_answerable": 0.1}}
    failures = gate(report, baseline, 0.02)
    assert [f.split(":")[0] for f in failures] == ["ndcg@10", "refused_answerable"]


def test_cli_compare_gate_and_details(tmp_path: Path, samples: Path) -> None:
    qfile = write(tmp_path / "q.jsonl", QUESTIONS)
    (tmp_path / "small.toml").write_text("[chunking]\nsize = 64\noverlap = 8\n")
    (tmp_path / "large.toml").write_text("[chunking]\nsize = 200\n")
    result = cli(["eval", str(qfile), "--docs", str(samples), "--retrieval-only", "--config", "small.toml",
                  "--config", "large.toml", "--json", "--details", "d.jsonl", "--out", "r.json", "--plot", "p.svg"],
                 tmp_path)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "rag-cli/eval-comparison/v1" and [r["label"] for r in doc["reports"]] == ["small", "large"]
    assert all("ndcg@10" in r["metrics"] for r in doc["reports"])
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 6
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    svg = (tmp_path / "p.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and ">small</text>" in svg
    import xml.etree.ElementTree as ET

    ET.fromstring(svg)  # well-formed

    plain = cli(["eval", str(qfile), "--docs", str(samples), "--retrieval-only", "--config", "small.toml",
                 "--config", "large.toml"], tmp_path)
    assert plain.exit_code == 0 and "metric\tsmall\tlarge\tchange" in plain.stdout

    baseline = {"schema": "rag-cli/eval-report/v1", "metrics": {"recall@1": 1.5}}  # unreachable: must fail
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    gated = cli(["eval", str(qfile), "--docs", str(samples), "--retrieval-only", "--baseline", "base.json"], tmp_path)
    assert gated.exit_code == ExitCode.GATE and "regression: recall@1" in gated.stderr

    bad = write(tmp_path / "bad.jsonl", ["{oops"])
    assert cli(["eval", str(bad), "--retrieval-only"], tmp_path).exit_code == ExitCode.USAGE


def test_ctrl_c_keeps_the_results_so_far(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    qs = load_questions(write(tmp_path / "q.jsonl", QUESTIONS))

    def interrupt(row):
        raise KeyboardInterrupt

    report = run_eval(settings, qs, retrieval_only=True, on_row=interrupt)
    assert report.interrupted and report.counts["questions"] == 1 and "ndcg@10" in report.metrics
