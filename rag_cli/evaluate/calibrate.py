"""`rag eval --calibrate`: the refusal gate's settings (`retrieval.min_score`,
`retrieval.coverage_weight`, `retrieval.refuse_unknown_names`) tuned on the user's own answerable
and unanswerable questions.

The gate (`Asker._gate`) refuses before any model runs when the best hit's evidence, its cosine
similarity plus coverage_weight x its coverage of the question, is below min_score. Both parts
come from retrieval alone and neither depends on the two settings, so each question is
retrieved once (``measure``) and every setting is then scored offline (``calibrate``): no
language model, and a sweep of hundreds of settings takes milliseconds. The model's own refusals
(after the gate lets a question through) are not part of this: they can only add refusals, so
end-to-end `rag eval` refuses at least what the gate does, of both kinds."""

from __future__ import annotations

import bisect
import datetime
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_cli.errors import InputError
from rag_cli.evaluate.dataset import Question
from rag_cli.progress import NullProgress, Progress

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0)
STEP = 0.005  # min_score is chosen on this grid, so .rag.toml gets a readable number
NO_HIT = -math.inf  # a question with no passages at all: refused whatever the setting


@dataclass(frozen=True)
class Evidence:
    """What the gate sees of one question: the best hit's cosine similarity and coverage."""

    qid: str
    answerable: bool
    score: float
    coverage: float
    unknown_name: bool = False  # it names something no chunk holds (retrieval.refuse_unknown_names)

    def value(self, weight: float, names: bool = False) -> float:
        """The evidence `Searcher.evidence` computes with coverage_weight ``weight``; NO_HIT (refused
        whatever min_score is) for a question the gate refuses on its names, with ``names`` on."""
        if self.score == NO_HIT or (names and self.unknown_name):
            return NO_HIT
        return self.score if weight <= 0 else self.score + weight * self.coverage


@dataclass(frozen=True)
class Rates:
    """Shares refused by one setting: of the unanswerable questions (right) and the answerable (wrong)."""

    refused_unanswerable: float
    refused_answerable: float

    def to_dict(self) -> dict[str, float]:
        return {"refused_unanswerable": round(self.refused_unanswerable, 4),
                "refused_answerable": round(self.refused_answerable, 4)}


@dataclass(frozen=True)
class Setting:
    """One gate setting and what it refuses on the questions it was measured on."""

    coverage_weight: float
    min_score: float
    rates: Rates
    names: bool = False  # retrieval.refuse_unknown_names

    def to_dict(self) -> dict[str, Any]:
        return {"coverage_weight": self.coverage_weight, "min_score": self.min_score,
                "refuse_unknown_names": self.names, **self.rates.to_dict()}


@dataclass
class Calibration:
    """The result of `rag eval --calibrate`.

    ``chosen`` is None when no setting reaches ``target`` while refusing at most ``max_wrong``
    of the answerable questions; ``best`` is then the setting that reaches the target refusing
    fewest of them, and ``within`` the one refusing most unanswerable questions within
    ``max_wrong``. ``folds``: (setting chosen on the other folds, its rates on this fold);
    ``heldout``: the rates on the held-back part (``holdout``) of the setting chosen on the rest."""

    questions_file: str
    answerable: int
    unanswerable: int
    target: float
    max_wrong: float
    seed: int
    best: Setting
    within: Setting | None
    tradeoff: list[Setting]
    curve: list[Setting]
    folds: list[tuple[Setting, Rates]] = field(default_factory=list)
    holdout: float = 0.0
    heldout: Rates | None = None
    heldout_counts: tuple[int, int] = (0, 0)
    written: str | None = None

    SCHEMA = "rag-cli/eval-calibration/v1"

    @property
    def chosen(self) -> Setting | None:
        return self.best if self.best.rates.refused_answerable <= self.max_wrong + 1e-9 else None

    def cv(self) -> dict[str, tuple[float, float]] | None:
        """(mean, standard deviation) of both rates over the held-out folds."""
        if len(self.folds) < 2:
            return None
        out = {}
        for name in ("refused_unanswerable", "refused_answerable"):
            values = [getattr(rates, name) for _, rates in self.folds]
            out[name] = (statistics.fmean(values), statistics.stdev(values))
        return out

    def expected(self) -> Rates:
        """The best estimate of the chosen setting's rates on new questions: the held-back part's,
        else the cross-validation mean, else the rates on the calibration questions."""
        if self.heldout is not None:
            return self.heldout
        cv = self.cv()
        if cv is not None:
            return Rates(cv["refused_unanswerable"][0], cv["refused_answerable"][0])
        return self.best.rates

    def to_dict(self) -> dict[str, Any]:
        cv = self.cv()
        return {"schema": self.SCHEMA, "questions_file": self.questions_file,
                "answerable": self.answerable, "unanswerable": self.unanswerable,
                "target": self.target, "max_wrong": self.max_wrong, "seed": self.seed,
                "reachable": self.chosen is not None,
                "chosen": self.chosen.to_dict() if self.chosen else None, "best": self.best.to_dict(),
                "within_max_wrong": self.within.to_dict() if self.within else None,
                "tradeoff": [s.to_dict() for s in self.tradeoff], "curve": [s.to_dict() for s in self.curve],
                "folds": [{"setting": s.to_dict(), "held_out": r.to_dict()} for s, r in self.folds],
                "cross_validation": None if cv is None else {
                    k: {"mean": round(m, 4), "stdev": round(sd, 4)} for k, (m, sd) in cv.items()},
                "holdout": self.holdout or None,
                "heldout": None if self.heldout is None else {
                    **self.heldout.to_dict(), "answerable": self.heldout_counts[0],
                    "unanswerable": self.heldout_counts[1]},
                "written": self.written}


def measure(searcher: Any, questions: Sequence[Question], top_k: int,
            progress: Progress | None = None) -> list[Evidence]:
    """Each question's evidence, retrieved once as `rag ask` retrieves it (``top_k`` hits, the
    first one judged)."""
    progress = progress or NullProgress()
    progress.update("questions", total=len(questions))
    out = []
    for q in questions:
        hits, _ = searcher.search(q.question, top_k)
        if not hits:
            out.append(Evidence(q.qid, q.answerable, NO_HIT, 0.0))
        else:
            covered = searcher.coverage(q.question, hits[0])
            out.append(Evidence(q.qid, q.answerable, hits[0].score, 1.0 if covered is None else covered,
                                bool(searcher.unknown_names(q.question))))
        progress.update("questions", advance=1)
    return out


def _share_below(values: Sequence[float], threshold: float) -> float:
    return sum(v < threshold for v in values) / len(values) if values else 0.0


def rates(evidence: Sequence[Evidence], weight: float, min_score: float, names: bool = False) -> Rates:
    """What the gate refuses with these settings: it refuses when evidence < min_score (and, with
    ``names``, a question naming something no chunk holds)."""
    unans = [e.value(weight, names) for e in evidence if not e.answerable]
    ans = [e.value(weight, names) for e in evidence if e.answerable]
    return Rates(_share_below(unans, min_score), _share_below(ans, min_score))


def _grid_floor(value: float) -> float:
    """The largest multiple of STEP at or below ``value`` (rounded for .rag.toml, checked after)."""
    t = round(math.floor(value / STEP) * STEP, 3)
    while t > value:
        t = round(t - STEP, 3)
    return t


def _grid_above(value: float) -> float:
    """The smallest multiple of STEP strictly above ``value``: a min_score that refuses it."""
    t = _grid_floor(value)
    while t <= value:
        t = round(t + STEP, 3)
    return t


def threshold_for(evidence: Sequence[Evidence], weight: float, target: float, names: bool = False) -> float:
    """The smallest min_score (on the STEP grid) refusing at least ``target`` of the
    unanswerable questions."""
    values = sorted(e.value(weight, names) for e in evidence if not e.answerable)
    need = math.ceil(target * len(values) - 1e-9)
    if need == 0 or values[need - 1] == NO_HIT:  # questions refused whatever min_score is are enough:
        finite = [v for e in evidence if (v := e.value(weight, names)) != NO_HIT]  # then refuse no other
        return _grid_floor(min(finite)) if finite else 0.0
    return _grid_above(values[need - 1])


def sweep(evidence: Sequence[Evidence], target: float, weights: Sequence[float] = WEIGHTS) -> list[Setting]:
    """For each coverage weight, with the names rule off and on, the setting that just reaches
    ``target`` (the trade-off table)."""
    out = []
    for names in (False, True):
        for w in weights:
            t = threshold_for(evidence, w, target, names)
            out.append(Setting(w, t, rates(evidence, w, t, names), names))
    return out


def choose(evidence: Sequence[Evidence], target: float, weights: Sequence[float] = WEIGHTS) -> Setting:
    """The setting reaching ``target`` on the unanswerable questions that refuses fewest answerable
    ones (ties: more unanswerable refused, then the smaller weight, then the names rule on, the default)."""
    return min(sweep(evidence, target, weights), key=lambda s: (s.rates.refused_answerable,
                                                                -s.rates.refused_unanswerable, s.coverage_weight,
                                                                not s.names))


def best_within(evidence: Sequence[Evidence], max_wrong: float,
                weights: Sequence[float] = WEIGHTS) -> Setting | None:
    """The setting refusing most unanswerable questions while refusing at most ``max_wrong`` of
    the answerable ones (None when there are no answerable questions)."""
    answerable = [e for e in evidence if e.answerable]
    if not answerable:
        return None
    allowed = math.floor(max_wrong * len(answerable) + 1e-9)
    best: Setting | None = None
    for names, w in ((names, w) for names in (False, True) for w in weights):
        values = sorted(e.value(w, names) for e in answerable)
        finite = [v for v in values if v != NO_HIT] or [0.0]
        # a threshold at or below values[allowed] refuses at most the `allowed` values under it
        if allowed >= len(values):
            t = _grid_above(max(finite))
        else:
            t = _grid_floor(values[allowed] if values[allowed] != NO_HIT else min(finite))
        s = Setting(w, t, rates(evidence, w, t, names), names)
        if best is None or (s.rates.refused_unanswerable, -s.rates.refused_answerable) > \
                (best.rates.refused_unanswerable, -best.rates.refused_answerable):
            best = s
    return best


def curve(evidence: Sequence[Evidence], weight: float, names: bool = False) -> list[Setting]:
    """The trade-off of one coverage weight across min_score, from refusing none to refusing all
    (of the questions with passages): one point wherever a rate changes."""
    unans = sorted(e.value(weight, names) for e in evidence if not e.answerable)
    ans = sorted(e.value(weight, names) for e in evidence if e.answerable)
    finite = sorted({v for v in unans + ans if v != NO_HIT})
    if not finite:
        return [Setting(weight, 0.0, rates(evidence, weight, 0.0, names), names)]
    out: list[Setting] = []
    for t in sorted({_grid_floor(finite[0])} | {_grid_above(v) for v in finite}):
        r = Rates(bisect.bisect_left(unans, t) / max(1, len(unans)), bisect.bisect_left(ans, t) / max(1, len(ans)))
        if not out or r != out[-1].rates:
            out.append(Setting(weight, t, r, names))
    return out


def split(evidence: Sequence[Evidence], parts: int, seed: int) -> list[list[Evidence]]:
    """``parts`` folds stratified by answerable: each kind shuffled (seeded) and dealt in turn."""
    rng = random.Random(seed)
    folds: list[list[Evidence]] = [[] for _ in range(parts)]
    for kind in (True, False):
        group = [e for e in evidence if e.answerable is kind]
        rng.shuffle(group)
        for i, e in enumerate(group):
            folds[i % parts].append(e)
    return folds


def hold_out(evidence: Sequence[Evidence], share: float, seed: int) -> tuple[list[Evidence], list[Evidence]]:
    """(calibration part, held-back part): ``share`` of each kind held back, chosen at random (seeded)."""
    rng = random.Random(seed)
    fit: list[Evidence] = []
    back: list[Evidence] = []
    for kind in (True, False):
        group = [e for e in evidence if e.answerable is kind]
        rng.shuffle(group)
        n = round(share * len(group))
        back += group[:n]
        fit += group[n:]
    return fit, back


def cross_validate(evidence: Sequence[Evidence], target: float, folds: int, seed: int) -> list[tuple[Setting, Rates]]:
    """For each fold: the setting chosen on the other folds, and its rates on this one."""
    out = []
    parts = split(evidence, folds, seed)
    for i, test in enumerate(parts):
        train = [e for j, part in enumerate(parts) if j != i for e in part]
        chosen = choose(train, target)
        out.append((chosen, rates(test, chosen.coverage_weight, chosen.min_score, chosen.names)))
    return out


def calibrate(evidence: Sequence[Evidence], *, target: float = 0.9, max_wrong: float = 0.1, folds: int = 5,
              holdout: float = 0.0, seed: int = 0, questions_file: str = "") -> Calibration:
    """Choose the gate setting on ``evidence`` (less a held-back ``holdout`` share, measured
    apart), cross-validated over ``folds`` folds. InputError without both kinds of question."""
    fit, back = hold_out(evidence, holdout, seed) if holdout > 0 else (list(evidence), [])
    n_ans = sum(e.answerable for e in fit)
    n_unans = len(fit) - n_ans
    if n_ans == 0 or n_unans == 0:
        raise InputError(f"calibration needs answerable and unanswerable questions; {questions_file or 'the file'} "
                         f"has {n_ans} answerable and {n_unans} unanswerable (to calibrate on)",
                         hint='mark questions your documents cannot answer with "answerable": false; questions '
                              "about documents that are not in this index are an easy source")
    best = choose(fit, target)
    folds = min(folds, n_ans, n_unans)
    result = Calibration(questions_file=questions_file, answerable=n_ans, unanswerable=n_unans, target=target,
                         max_wrong=max_wrong, seed=seed, best=best, within=best_within(fit, max_wrong),
                         tradeoff=sweep(fit, target), curve=curve(fit, best.coverage_weight, best.names),
                         folds=cross_validate(fit, target, folds, seed) if folds >= 2 else [], holdout=holdout)
    if back:
        result.heldout = rates(back, best.coverage_weight, best.min_score, best.names)
        result.heldout_counts = (sum(e.answerable for e in back), sum(not e.answerable for e in back))
    return result


COMMENT_START = "# rag eval --calibrate"


def comment_line(result: Calibration, today: datetime.date | None = None) -> str:
    """The comment written above the settings: when, on what, and what to expect of them."""
    day = (today or datetime.date.today()).isoformat()
    name = Path(result.questions_file).name or "questions"
    how = f"{result.answerable + result.unanswerable} questions"
    if result.folds:
        how += f", {len(result.folds)}-fold"
    expected = result.expected()
    measured = "" if result.heldout is None and not result.folds else " on held-out questions"
    if result.heldout is not None:
        how += f"; {sum(result.heldout_counts)} held back"
    return (f"{COMMENT_START}, {day}, on {name} ({how}): {expected.refused_unanswerable:.0%} unanswerable refused, "
            f"{expected.refused_answerable:.0%} answerable refused{measured}")


def write_setting(result: Calibration, path: Path, today: datetime.date | None = None) -> str:
    """Save the chosen setting under [retrieval] of the settings file ``path``, keeping the rest
    of it; the comment line written (also in ``result.written``). InputError when the target was
    not reached (nothing is written); ConfigError when the file cannot be edited safely."""
    from rag_cli.evaluate.settings_file import set_keys

    chosen = result.chosen
    if chosen is None:
        raise InputError(f"no setting reaches the target, so {path} was not changed")
    comment = comment_line(result, today)
    set_keys(path, "retrieval", {"min_score": chosen.min_score, "coverage_weight": chosen.coverage_weight,
                                 "refuse_unknown_names": chosen.names},
             comment, replaces=COMMENT_START)
    result.written = str(path)
    return comment
