"""`rag eval --calibrate`: the refusal gate tuned on a question file, rendered (text or JSON), and
with --write saved to .rag.toml."""

from __future__ import annotations

from pathlib import Path

import typer

from rag_cli.cli.env import Env
from rag_cli.cli.progress import RichProgress
from rag_cli.config import CONFIG_NAME, Settings
from rag_cli.errors import ExitCode, InputError
from rag_cli.evaluate.calibrate import Calibration, Setting, write_setting
from rag_cli.evaluate.dataset import Question

GATE_KEYS = ("retrieval.min_score", "retrieval.coverage_weight", "retrieval.refuse_unknown_names")


def run_calibration(env: Env, settings: Settings, questions: list[Question], *, questions_file: Path,
                    target: float, max_wrong: float, folds: int, holdout: float, seed: int, write: bool,
                    as_json: bool) -> None:
    """Calibrate, print, write; exit 8 (the quality gate) when the target cannot be reached."""
    if not 0 < target <= 1 or not 0 <= max_wrong <= 1:
        raise InputError("--target and --max-wrong are shares between 0 and 1", hint="e.g. --target 0.9")
    if not 0 <= holdout < 1:
        raise InputError("--holdout is the share of questions held back, from 0 to below 1", hint="e.g. 0.5")
    if folds < 2 and folds != 0:
        raise InputError("--folds needs 2 or more (0: no cross-validation)")
    from rag_cli.api import Index

    with RichProgress(env) as progress:
        result = Index(settings, serve=False).calibrate(questions, target=target, max_wrong=max_wrong, folds=folds,
                                                        holdout=holdout, seed=seed,
                                                        questions_file=str(questions_file), progress=progress)
    path = settings.config_file or settings.base_dir / CONFIG_NAME
    if write and result.chosen is None:
        env.warn(f"nothing written to {path}: no setting reaches the target")
    elif write:
        write_setting(result, path)
        shadowed = [f"{k} ({settings.sources[k]})" for k in GATE_KEYS
                    if settings.sources.get(k, "default").startswith(("env", "flag", "--set"))]
        if shadowed:
            env.warn(f"wrote {path}, but {', '.join(shadowed)} override it")
    if as_json:
        env.print_json(result.to_dict())
    else:
        render_calibration(env, result)
    if result.chosen is None:
        raise typer.Exit(int(ExitCode.GATE))


def _toml(flag: bool) -> str:
    return "true" if flag else "false"


def _pct(x: float) -> str:
    return f"{x:6.1%}"


def _row(s: Setting) -> str:
    return (f"  {'on' if s.names else 'off':>13}  {s.coverage_weight:15.1f}  {s.min_score:9.3f}  "
            f"{_pct(s.rates.refused_unanswerable):>20}  "
            f"{_pct(s.rates.refused_answerable):>26}")


def render_calibration(env: Env, result: Calibration) -> None:
    """The trade-off table, the chart, the choice and its held-out figures."""
    from rag_cli.evaluate.plot import tradeoff_chart

    env.line(f"{result.answerable} answerable and {result.unanswerable} unanswerable questions from "
             f"{result.questions_file}" + (f" ({sum(result.heldout_counts)} more held back)" if result.heldout else ""))
    env.line(f"for each refuse_unknown_names and coverage_weight, the min_score refusing >= {result.target:.0%} "
             "of the unanswerable:")
    env.line("  unknown names  coverage_weight  min_score  unanswerable refused  answerable wrongly refused")
    for s in result.tradeoff:
        env.line(_row(s) + ("   <- best" if s == result.best else ""))
    env.line("")
    env.line(f"the trade-off across min_score (coverage_weight {result.best.coverage_weight}; ◆ the choice):")
    points = [(s.rates.refused_answerable, s.rates.refused_unanswerable) for s in result.curve]
    mark = (result.best.rates.refused_answerable, result.best.rates.refused_unanswerable)
    for line in tradeoff_chart(points, mark, target=result.target):
        env.line("  " + line)
    env.line("")
    b = result.best
    if result.chosen is None:
        env.line(f"target not reached: refusing {result.target:.0%} of the unanswerable questions also refuses "
                 f"{b.rates.refused_answerable:.1%} of the answerable ones (--max-wrong {result.max_wrong:.0%})")
        if result.within is not None:
            w = result.within
            env.line(f"within --max-wrong: refuse_unknown_names {_toml(w.names)}, coverage_weight {w.coverage_weight}, "
                     f"min_score {w.min_score:.3f} refuses "
                     f"{w.rates.refused_unanswerable:.1%} of the unanswerable, "
                     f"{w.rates.refused_answerable:.1%} of the answerable")
    label = "chosen" if result.chosen is not None else "best at the target"
    env.line(f"{label}: retrieval.refuse_unknown_names = {_toml(b.names)}, retrieval.coverage_weight = "
             f"{b.coverage_weight}, retrieval.min_score = {b.min_score:.3f} "
             f"({b.rates.refused_unanswerable:.1%} unanswerable refused, {b.rates.refused_answerable:.1%} answerable "
             "refused, on the questions it was chosen on)")
    cv = result.cv()
    if cv is not None:
        (u, su), (a, sa) = cv["refused_unanswerable"], cv["refused_answerable"]
        env.line(f"{len(result.folds)}-fold cross-validation (chosen on the other folds, measured on each): "
                 f"unanswerable refused {u:.1%} ± {su:.1%}, answerable refused {a:.1%} ± {sa:.1%}")
    if result.heldout is not None:
        h = result.heldout
        env.line(f"held back ({result.heldout_counts[0]} answerable, {result.heldout_counts[1]} unanswerable): "
                 f"unanswerable refused {h.refused_unanswerable:.1%}, answerable refused {h.refused_answerable:.1%}")
    if result.written:
        env.line(f"wrote {result.written} [retrieval]: min_score = {b.min_score}, coverage_weight = "
                 f"{b.coverage_weight}, refuse_unknown_names = {_toml(b.names)}")
    elif result.chosen is not None:
        env.line("--write saves it to .rag.toml")
