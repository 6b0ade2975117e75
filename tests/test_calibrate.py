"""`rag eval --calibrate`: the sweep and the choice on hand-made evidence, the .rag.toml edit, and
one real run of the installed `rag` on the samples."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rag_cli.errors import ConfigError, ExitCode, InputError
from rag_cli.evaluate.calibrate import (
    NO_HIT,
    Evidence,
    Rates,
    best_within,
    calibrate,
    choose,
    comment_line,
    curve,
    hold_out,
    rates,
    split,
    threshold_for,
    write_setting,
)
from rag_cli.evaluate.settings_file import set_keys


def ev(qid: str, answerable: bool, score: float, coverage: float = 0.0) -> Evidence:
    return Evidence(qid, answerable, score, coverage)


def test_the_gate_refuses_below_min_score_with_the_coverage_weight() -> None:
    e = [ev("a", True, 0.5, 0.4), ev("u", False, 0.45, 0.0)]
    assert rates(e, 0.0, 0.48) == Rates(1.0, 0.0)
    assert rates(e, 1.0, 0.9).refused_answerable == 0.0  # evidence 0.5 + 0.4 is not below 0.9
    assert rates(e, 1.0, 0.905).refused_answerable == 1.0


def test_threshold_is_the_smallest_grid_value_reaching_the_target() -> None:
    unans = [ev(f"u{i}", False, s) for i, s in enumerate([0.10, 0.20, 0.30, 0.40, 0.52, 0.61, 0.70, 0.80, 0.90, 0.95])]
    t = threshold_for(unans, 0.0, 0.9)
    assert t == 0.905  # 9 of 10 must fall below: just above 0.90
    assert rates(unans, 0.0, t).refused_unanswerable == 0.9
    assert rates(unans, 0.0, t - 0.005).refused_unanswerable == 0.8
    assert threshold_for(unans, 0.0, 0.5) == 0.525


def test_questions_without_passages_count_as_refused() -> None:
    e = [ev("u1", False, NO_HIT), ev("u2", False, 0.7), ev("a", True, 0.6)]
    assert rates(e, 1.0, -5.0).refused_unanswerable == 0.5
    assert rates(e, 0.0, threshold_for(e, 0.0, 0.5)).refused_answerable == 0.0
    e.append(ev("a2", True, NO_HIT))
    within = best_within(e, 0.0)
    assert within is not None and within.rates.refused_answerable == 0.5  # the one without passages, no more
    assert calibrate(e, folds=0).best.rates.refused_unanswerable >= 0.9


def test_the_choice_takes_the_weight_that_separates_and_refuses_fewest_answerable() -> None:
    # cosine alone cannot tell them apart; the coverage can
    e = [ev(f"a{i}", True, 0.5, 0.8) for i in range(10)] + [ev(f"u{i}", False, 0.5 + i / 100, 0.1) for i in range(10)]
    chosen = choose(e, 0.9, weights=(0.0, 0.5, 1.0))
    assert chosen.coverage_weight == 0.5
    assert chosen.rates.refused_unanswerable >= 0.9 and chosen.rates.refused_answerable == 0.0
    assert choose(e, 0.9, weights=(0.0,)).rates.refused_answerable == 1.0


def test_an_unreachable_target_is_reported_with_the_best_trade_offs() -> None:
    e = [ev(f"a{i}", True, 0.2 + i / 20) for i in range(10)] + [ev(f"u{i}", False, 0.25 + i / 20) for i in range(10)]
    result = calibrate(e, target=0.9, max_wrong=0.1, folds=0)
    assert result.chosen is None and result.best.rates.refused_unanswerable >= 0.9
    assert result.best.rates.refused_answerable > 0.1
    within = best_within(e, 0.1)
    assert within is not None and within.rates.refused_answerable <= 0.1
    assert result.to_dict()["reachable"] is False
    with pytest.raises(InputError):
        write_setting(result, Path("unused.toml"))


def test_folds_and_holdout_are_stratified_and_seeded() -> None:
    e = [ev(f"a{i}", True, 0.9) for i in range(20)] + [ev(f"u{i}", False, 0.3) for i in range(10)]
    folds = split(e, 5, seed=3)
    assert [sum(x.answerable for x in f) for f in folds] == [4] * 5
    assert [sum(not x.answerable for x in f) for f in folds] == [2] * 5
    assert split(e, 5, seed=3) == folds and split(e, 5, seed=4) != folds
    fit, back = hold_out(e, 0.5, seed=1)
    assert (sum(x.answerable for x in back), sum(not x.answerable for x in back)) == (10, 5)
    assert {x.qid for x in fit} | {x.qid for x in back} == {x.qid for x in e} and not set(fit) & set(back)


def test_calibration_cross_validates_and_measures_the_held_back_part() -> None:
    e = [ev(f"a{i}", True, 0.6 + (i % 7) / 40, (i % 3) / 5) for i in range(40)] + \
        [ev(f"u{i}", False, 0.3 + (i % 3) / 40) for i in range(20)]  # each value a third: 90% needs all
    result = calibrate(e, target=0.9, max_wrong=0.1, folds=4, holdout=0.25, seed=2, questions_file="q.jsonl")
    assert result.chosen is not None and len(result.folds) == 4
    assert (result.answerable, result.unanswerable, result.heldout_counts) == (30, 15, (10, 5))
    cv = result.cv()
    assert cv is not None and cv["refused_unanswerable"][0] == 1.0 and cv["refused_answerable"][0] == 0.0
    assert result.heldout == Rates(1.0, 0.0)
    line = comment_line(result, datetime.date(2026, 12, 3))
    assert line == ("# rag eval --calibrate, 2026-12-03, on q.jsonl (45 questions, 4-fold; 15 held back): "
                    "100% unanswerable refused, 0% answerable refused on held-out questions")
    with pytest.raises(InputError):
        calibrate([x for x in e if x.answerable])


def test_the_curve_runs_from_refusing_nothing_to_refusing_everything() -> None:
    e = [ev(f"a{i}", True, 0.5 + i / 10) for i in range(5)] + [ev(f"u{i}", False, 0.3 + i / 10) for i in range(5)]
    points = curve(e, 0.0)
    assert points[0].rates.refused_answerable == 0 and points[0].rates.refused_unanswerable == 0
    assert points[-1].rates.refused_answerable == 1 and points[-1].rates.refused_unanswerable == 1
    pairs = [(p.rates.refused_answerable, p.rates.refused_unanswerable) for p in points]
    assert pairs == sorted(pairs)


USER_TOML = """\
# my project's settings
[chunking]
size = 300  # tokens, not words

[retrieval]
# fewer passages: the model is small
top_k = 4
min_score = 0.81  # from the docs

[llm]
model = "smollm2"
"""


def test_writing_keeps_the_users_comments_and_other_keys(tmp_path: Path) -> None:
    path = tmp_path / ".rag.toml"
    path.write_text(USER_TOML)
    set_keys(path, "retrieval", {"min_score": 0.655, "coverage_weight": 0.3}, "# rag eval --calibrate, first",
             replaces="# rag eval --calibrate")
    text = path.read_text()
    for kept in ("# my project's settings", "size = 300  # tokens, not words", "# fewer passages: the model is small",
                 "top_k = 4", 'model = "smollm2"', "min_score = 0.655  # from the docs"):
        assert kept in text
    data = tomllib.loads(text)
    assert data["retrieval"] == {"top_k": 4, "min_score": 0.655, "coverage_weight": 0.3}
    assert data["chunking"] == {"size": 300} and data["llm"] == {"model": "smollm2"}
    set_keys(path, "retrieval", {"min_score": 0.7, "coverage_weight": 0.3}, "# rag eval --calibrate, second",
             replaces="# rag eval --calibrate")
    again = path.read_text()
    assert "first" not in again and again.count("# rag eval --calibrate") == 1
    assert again.index("# rag eval --calibrate, second") < again.index("min_score = 0.7")
    assert tomllib.loads(again)["retrieval"]["min_score"] == 0.7


def test_writing_adds_a_missing_section_or_file(tmp_path: Path) -> None:
    path = tmp_path / ".rag.toml"
    set_keys(path, "retrieval", {"min_score": 0.6}, "# made")
    assert tomllib.loads(path.read_text()) == {"retrieval": {"min_score": 0.6}}
    path.write_text("[chunking]\nsize = 200\n")
    set_keys(path, "retrieval", {"min_score": 0.6}, "# made")
    assert tomllib.loads(path.read_text()) == {"chunking": {"size": 200}, "retrieval": {"min_score": 0.6}}


@pytest.mark.parametrize("layout", ["retrieval.min_score = 0.5\n", "retrieval = { min_score = 0.5 }\n",
                                    "[retrieval\nmin_score = 0.5\n"])
def test_a_file_that_cannot_be_edited_safely_is_left_alone(tmp_path: Path, layout: str) -> None:
    path = tmp_path / ".rag.toml"
    path.write_text(layout)
    with pytest.raises(ConfigError) as info:
        set_keys(path, "retrieval", {"min_score": 0.7}, "# c")
    assert "retrieval.min_score = 0.7" in (info.value.hint or "")
    assert path.read_text() == layout


ANSWERABLE = ["How often should I feed my starter?", "What is the float test?",
              "Can I use all-purpose flour instead of bread flour?", "How should I store a baked loaf?",
              "What can I do with starter discard?", "Why is my bread dense and heavy?"]
UNANSWERABLE = ["Who won the 1998 FIFA World Cup final?", "What is the boiling point of mercury in kelvin?",
                "Which party won the 1992 general election in the United Kingdom?",
                "How many moons does Neptune have?", "What is the capital of Mongolia?",
                "Who composed the opera Tosca?"]


@pytest.mark.slow
def test_rag_eval_calibrate_write_sets_what_rag_config_reports(tmp_path: Path, samples: Path) -> None:
    rag = str(Path(sys.executable).parent / "rag")  # the installed command
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    (tmp_path / ".rag.toml").write_text("# the samples\n[retrieval]\ntop_k = 5  # kept\n")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": f"a{i}", "question": q}) + "\n" for i, q in enumerate(ANSWERABLE))
                         + "".join(json.dumps({"id": f"u{i}", "question": q, "answerable": False}) + "\n"
                                   for i, q in enumerate(UNANSWERABLE)))
    done = subprocess.run([rag, "index", str(samples)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    cal = subprocess.run([rag, "eval", str(questions), "--calibrate", "--folds", "3", "--write", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert cal.returncode == 0, (cal.stdout, cal.stderr)
    result = json.loads(cal.stdout)
    chosen = result["chosen"]
    assert result["reachable"] and chosen["refused_unanswerable"] >= 0.9 and chosen["refused_answerable"] <= 0.1
    assert result["written"] == str(tmp_path / ".rag.toml") and len(result["folds"]) == 3
    text = (tmp_path / ".rag.toml").read_text()
    assert "# the samples" in text and "top_k = 5  # kept" in text
    assert "# rag eval --calibrate, " in text and "on questions.jsonl (12 questions, 3-fold)" in text
    shown = subprocess.run([rag, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    source = str(tmp_path / ".rag.toml")
    assert f"retrieval.min_score = {chosen['min_score']}  # {source}" in shown.stdout
    assert f"retrieval.coverage_weight = {chosen['coverage_weight']}  # {source}" in shown.stdout
    # an unreachable target: the same question on both sides cannot be refused on one side only
    before = (tmp_path / ".rag.toml").read_text()
    with questions.open("a") as fh:
        fh.write(json.dumps({"id": "twin", "question": ANSWERABLE[0], "answerable": False}) + "\n")
    hard = subprocess.run([rag, "eval", str(questions), "--calibrate", "--target", "1", "--max-wrong", "0",
                           "--folds", "0", "--write"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert hard.returncode == ExitCode.GATE, (hard.stdout, hard.stderr)
    assert "target not reached" in hard.stdout and "nothing written" in hard.stderr
    assert (tmp_path / ".rag.toml").read_text() == before


def test_the_measured_evidence_is_what_the_gate_of_rag_ask_tests(tmp_path: Path, samples: Path) -> None:
    from indexing_helpers import settings_in
    from rag_cli.api import Index
    from rag_cli.ask import Asker
    from rag_cli.evaluate.calibrate import measure
    from rag_cli.evaluate.dataset import Question
    from rag_cli.retrieve.search import Searcher
    from rag_cli.testing.fakes import ScriptedGenerator

    settings = settings_in(tmp_path, embedding__backend="hash", serve__use="never", ask__cache=False)
    Index(settings).index([samples])
    questions = [Question(f"a{i}", q) for i, q in enumerate(ANSWERABLE)] + \
        [Question(f"u{i}", q, answerable=False) for i, q in enumerate(UNANSWERABLE)]
    evidence = measure(Searcher(settings), questions, settings.retrieval.top_k)
    best = calibrate(evidence, target=0.5, folds=0).best
    tuned = settings.with_values({"retrieval.min_score": best.min_score,
                                  "retrieval.coverage_weight": best.coverage_weight,
                                  "retrieval.refuse_unknown_names": best.names}, "test")
    asker = Asker(tuned, generators={"bundled": ScriptedGenerator("Daily [1].")})
    for q, e in zip(questions, evidence, strict=True):
        answer = asker.ask(q.question)
        gated = answer.refusal_reason in ("low_score", "unknown_name")
        assert gated == (e.value(best.coverage_weight, best.names) < best.min_score), q
        assert (answer.refusal_reason == "unknown_name") == (best.names and e.unknown_name), q
    assert rates(evidence, best.coverage_weight, best.min_score, best.names).refused_unanswerable >= 0.5
