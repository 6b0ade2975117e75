"""`rag eval QUESTIONS.jsonl`"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from rag_cli import observe
from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json
from rag_cli.cli.progress import RichProgress
from rag_cli.cli.render import render_eval
from rag_cli.errors import ExitCode, InputError


def eval_command(
    ctx: typer.Context,
    questions: Annotated[Path, typer.Argument(help="Question file (JSONL: id, question, answers, relevant, "
                                              "answerable).", show_default=False)],
    docs: Annotated[list[Path] | None, typer.Option("--docs", metavar="PATH", help="Index these documents into an eval "
                                                    "cache instead of using the current index (repeatable).")] = None,
    retrieval_only: Annotated[bool, typer.Option("--retrieval-only", help="Skip generation.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", help="Only the first N questions.")] = None,
    sample: Annotated[int | None, typer.Option("--sample", metavar="N", help="A random sample of N questions.")] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed for --sample.")] = 0,
    config: Annotated[list[Path] | None, typer.Option("--config", metavar="FILE", help="A settings file to evaluate; "
                                                      "repeat to compare configurations.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="KEY=VALUE setting for every "
                                                   "configuration (repeatable).")] = None,
    ks: Annotated[str, typer.Option("--k", metavar="K,K,...",
                                    help="Cut-offs for hit@k, recall@k, context recall.")] = "1,5,10,20",
    as_json: Json = False,
    out: Annotated[Path | None, typer.Option("--out", metavar="FILE",
                                             help="Write the whole report as JSON here.")] = None,
    details: Annotated[Path | None, typer.Option("--details", metavar="FILE",
                                                 help="Write one JSON line per question here.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="FILE",
                                              help="Write an SVG chart of recall@k and latency here.")] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", metavar="FILE",
                                                  help="A saved report to compare against.")] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", metavar="X", help="With --baseline: fail (exit 8) when a "
                                            "metric falls by more than this.")] = 0.02,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Tune the refusal gate (retrieval.min_score, "
                                            "coverage_weight) on answerable and unanswerable questions; no model.")]
    = False,
    target: Annotated[float, typer.Option("--target", metavar="X", help="With --calibrate: the share of unanswerable "
                                          "questions to refuse.")] = 0.9,
    max_wrong: Annotated[float, typer.Option("--max-wrong", metavar="X", help="With --calibrate: the most answerable "
                                             "questions to refuse (share), else exit 8.")] = 0.1,
    folds: Annotated[int, typer.Option("--folds", metavar="K", help="With --calibrate: cross-validation folds "
                                       "(0: none).")] = 5,
    holdout: Annotated[float, typer.Option("--holdout", metavar="X", help="With --calibrate: hold back this share "
                                           "of the questions (seeded by --seed) and report the choice on them.")] = 0.0,
    write: Annotated[bool, typer.Option("--write", help="With --calibrate: save the choice to .rag.toml "
                                        "[retrieval].")] = False,
) -> None:
    """Measure retrieval and answers on a question file; compare configurations; gate regressions."""
    env = env_of(ctx)
    from rag_cli.api import Index
    from rag_cli.evaluate.configs import configurations, with_eval_index
    from rag_cli.evaluate.dataset import load_questions, select
    from rag_cli.evaluate.runner import compare, gate

    try:
        cutoffs = tuple(sorted({int(k) for k in ks.split(",") if k.strip()}))
    except ValueError:
        raise InputError(f"--k {ks!r}: expected numbers like 1,5,10") from None
    if not cutoffs or cutoffs[0] < 1:
        raise InputError("--k needs positive cut-offs")
    chosen = select(load_questions(questions), limit=limit, sample=sample, seed=seed)
    if calibrate:
        from rag_cli.cli.eval_calibrate import run_calibration

        runs = configurations(Path.cwd(), config or [], set_ or [], env.config_file)
        if len(runs) > 1 or docs or baseline or plot or details or out:
            raise InputError("--calibrate takes one settings file and no --docs, --baseline, --plot, --details, --out")
        run_calibration(env, runs[0][1], chosen, questions_file=questions, target=target, max_wrong=max_wrong,
                        folds=folds, holdout=holdout, seed=seed, write=write, as_json=as_json)
        return
    if write:
        raise InputError("--write goes with --calibrate")
    reports = []
    for label, settings in configurations(Path.cwd(), config or [], set_ or [], env.config_file):
        t0 = time.perf_counter()
        with RichProgress(env) as progress:
            if docs:
                settings = with_eval_index(settings, docs, progress)
            indexed = time.perf_counter() - t0
            evaluated = Index(settings).evaluate(chosen, label=label, questions_file=str(questions),
                                                 retrieval_only=retrieval_only, ks=cutoffs, progress=progress)
        report = evaluated.report
        if evaluated.fallback:
            env.warn(f"rag serve stopped answering ({evaluated.fallback}); the rest ran in-process")
        elif evaluated.served_by is not None:
            env.note(f"{label or 'run'}: answered by rag serve (pid {evaluated.served_by})")
        totals, medians = observe.summarize(row["timings"] for row in report.rows)
        observe.timings("eval", {**({"index": indexed} if docs else {}), **totals, "total": report.seconds},
                        medians=medians, label=label, note=f"{len(report.rows)} questions", questions=len(report.rows),
                        served=evaluated.served_by is not None)
        if report.counts.get("errors"):
            env.warn(f"{label or 'run'}: {report.counts['errors']} question(s) got no generated answer "
                     f"({report.counts.get('unavailable', 0)} because llm.url could not be reached or kept failing); "
                     "they score 0 on the answer metrics")
        reports.append(report)
        if report.interrupted:
            break
    if details:
        with details.open("w", encoding="utf-8") as fh:
            for report in reports:
                for row in report.rows:
                    fh.write(json.dumps({"config": report.label, **row}, ensure_ascii=False) + "\n")
    document = reports[0].to_dict() if len(reports) == 1 else {
        "schema": "rag-cli/eval-comparison/v1", "reports": [r.to_dict() for r in reports]}
    if plot:
        from rag_cli.evaluate.plot import eval_svg

        plot.write_text(eval_svg(reports, cutoffs), encoding="utf-8")
    if out:
        out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    failures = []
    if baseline:
        try:
            saved = json.loads(baseline.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{baseline}: not a saved report ({exc})") from None
        saved = saved["reports"][0] if "reports" in saved else saved
        failures = gate(reports[-1], saved, max_drop)
    if as_json:
        env.print_json(document)
    else:
        render_eval(env, reports, compare(reports) if len(reports) > 1 else None, cutoffs)
    for failure in failures:
        env.error(f"regression: {failure}")
    if reports[-1].interrupted:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    if failures:
        raise typer.Exit(int(ExitCode.GATE))


def register(app: typer.Typer) -> None:
    app.command("eval")(boundary(eval_command))
