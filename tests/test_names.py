"""The unknown-names rule of the refusal gate (store/names.py, retrieval.refuse_unknown_names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_cli.evaluate.calibrate import Evidence, calibrate, sweep
from rag_cli.store.names import fold, question_names, unknown


@pytest.mark.parametrize("question, names", [
    ("What were Amazon's net sales in Q2 2023?", ["Amazon"]),
    ("How has Apple’s revenue from iPhone sales fluctuated?", ["Apple"]),
    ("Amazon reported what?", []),  # the first word of a sentence is capitalised anyway
    ("Net sales rose. Amazon said why?", []),
    ("Which single did Beyoncé and Coldplay collaborate on?", ["Beyoncé", "Coldplay"]),
    ("What campaign followed WWII, and what did the MVPs and AWS do?", []),  # acronyms are spelt out elsewhere
    ("Did the 10-Qs or the Q3 report say so?", []),
    ("Where is the Rhine? Is the Rhine long?", ["Rhine"]),
    ("Who is Al in the story?", []),  # under three letters
])
def test_question_names(question: str, names: list[str]) -> None:
    assert question_names(question) == names


def test_a_name_is_known_by_its_word_accents_ignored_and_one_typo_allowed() -> None:
    vocabulary = {"apple", "beyonce", "government", "sigismund", "rhine"}
    words = lambda name: [name.lower()]  # noqa: E731 - the index's tokenizer, here without a stemmer
    assert unknown(["Apple", "Amazon"], vocabulary, words) == ["Amazon"]
    assert unknown(["Beyoncé"], {fold("Beyoncé")}, words) == []
    assert fold("Kraków") == "krakow"
    assert unknown(["Goverment", "Sigimund", "Rhin"], vocabulary, words) == []  # one edit each
    assert unknown(["Rhein", "Danube"], vocabulary, words) == ["Rhein", "Danube"]  # "rhein": two edits from "rhine"


def test_calibration_turns_the_rule_on_when_it_separates_the_questions() -> None:
    """Unanswerable questions that name what the index lacks, with evidence as high as the
    answerable ones': only the names rule refuses them without refusing answerable ones."""
    evidence = [Evidence(f"a{i}", True, 0.6 + i / 100, 0.5) for i in range(20)] + \
        [Evidence(f"u{i}", False, 0.6 + i / 100, 0.5, unknown_name=True) for i in range(20)]
    best = calibrate(evidence, target=0.9, folds=0).best
    assert best.names and best.rates.refused_unanswerable == 1.0 and best.rates.refused_answerable == 0.0
    without = [s for s in sweep(evidence, 0.9) if not s.names]
    assert without and min(s.rates.refused_answerable for s in without) > 0.5


def test_ask_refuses_a_question_about_a_name_no_document_holds(tmp_path: Path, samples: Path) -> None:
    from indexing_helpers import settings_in
    from rag_cli.api import Index
    from rag_cli.ask import Asker
    from rag_cli.testing.fakes import ScriptedGenerator

    settings = settings_in(tmp_path, embedding__backend="hash", serve__use="never", ask__cache=False,
                           retrieval__min_score=-1.0)  # the score gate lets everything through
    Index(settings).index([samples])
    question = "How often should Zanzibar feed the starter?"
    answer = Asker(settings, generators={"bundled": ScriptedGenerator("Daily [1].")}).ask(question)
    assert answer.refused and answer.refusal_reason == "unknown_name"
    off = settings.with_values({"retrieval.refuse_unknown_names": False}, "test")
    answer = Asker(off, generators={"bundled": ScriptedGenerator("Daily [1].")}).ask(question)
    assert not answer.refused
    known = Asker(settings, generators={"bundled": ScriptedGenerator("Daily [1].")}).ask(
        "What does a Dutch oven do for the loaf?")  # a name the samples hold
    assert known.refusal_reason != "unknown_name"
