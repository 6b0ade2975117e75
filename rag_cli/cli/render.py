"""Rendering results: Rich on a terminal, plain text when piped, JSON with --json.

Document text and paths are never interpreted as Rich markup.
"""

from __future__ import annotations

import os
from typing import Any

from rich.table import Table
from rich.text import Text

from rag_cli import observe
from rag_cli.cli.env import Env, safe, safe_tree
from rag_cli.config import Settings
from rag_cli.models import ChunkPreview, CopyReport, FileStatus, IndexReport


def shown_path(path: str) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


# -- rag index --------------------------------------------------------------------------

def render_index_report(env: Env, report: IndexReport, *, as_json: bool) -> None:
    if as_json:
        env.print_json({**report.to_dict(), "run_id": observe.run_id()})
        return
    counts = " · ".join(f"{report.count(s)} {s.value}" for s in FileStatus if report.count(s) or s in (
        FileStatus.ADDED, FileStatus.UPDATED, FileStatus.UNCHANGED, FileStatus.REMOVED))
    chunks = (f"chunks: {report.chunks_written} embedded, {report.chunks_reused} reused, "
              f"{report.chunks_deleted} deleted; {report.chunks_total} in the index")
    seen = len([f for f in report.files if f.status is not FileStatus.REMOVED])
    into = f"the index {report.store}" if report.store else shown_path(report.index_path)
    head = f"Indexed {seen} file{'' if seen == 1 else 's'} into {into} in {report.seconds:.1f} s"
    if env.rich_stdout:
        env.out.print(Text(head, style="bold"))
        env.out.print(Text("  " + counts))
        env.out.print(Text("  " + chunks))
    else:
        env.line(head)
        env.line("  " + counts)
        env.line("  " + chunks)
    problems = report.problems
    if problems:
        env.line(f"{len(problems)} file(s) with problems:")
        for f in problems:
            reason = f.reason if f.status is FileStatus.FAILED else "; ".join(f.warnings)
            env.line(f"  {shown_path(f.path)}: {reason}")


def render_copy_report(env: Env, report: CopyReport, *, as_json: bool) -> None:
    if as_json:
        env.print_json(report.to_dict())
        return
    env.line(f"Copied {shown_path(report.source)} to the index {report.target} in {report.seconds:.1f} s")
    env.line(f"  chunks: {report.chunks_sent} sent, {report.chunks_skipped} already there, {report.chunks_deleted} "
             f"deleted; {report.chunks_total} on the server, from {report.files} files")
    env.line("  set store.url to the same server (and use this index folder) to keep it up to date with `rag index`")


# -- rag chunk-preview --------------------------------------------------------------------

def render_preview(env: Env, preview: ChunkPreview, *, as_json: bool) -> None:
    if as_json:
        env.print_json(preview.to_dict())
        return
    head = (f"{shown_path(preview.path)}: {len(preview.chunks)} chunks from {preview.documents} document(s) · "
            f"strategy {preview.strategy}, size {preview.size}, overlap {preview.overlap} "
            f"({preview.tokenizer} tokens)")
    env.out.print(Text(safe(head), style="bold")) if env.rich_stdout else env.line(head)
    prev = None
    for chunk in preview.chunks:
        shared = 0
        if prev is not None and prev.doc_id == chunk.doc_id and chunk.start < prev.end:
            shared = prev.end - chunk.start
        parts = [f"chunk {chunk.index}", f"{chunk.tokens} tokens"]
        if preview.documents > 1:
            parts.insert(0, f"doc {chunk.doc_id}")
        if chunk.page_start is not None:
            parts.append(f"page {chunk.page_start}" if chunk.page_start == chunk.page_end
                         else f"pages {chunk.page_start}-{chunk.page_end}")
        if chunk.ocr:
            parts.append("OCR")
        if chunk.heading:
            parts.append(" > ".join(chunk.heading))
        parts.append(f"chars {chunk.start}-{chunk.end}")
        if shared:
            parts.append(f"overlap {shared} chars")
        title = safe("── " + " · ".join(parts) + " ")
        if env.rich_stdout:
            env.out.print(Text(title.ljust(min(100, env.out.width), "─"), style="cyan"))
            body = Text()
            body.append(safe(chunk.text[:shared]), style="dim italic")
            body.append(safe(chunk.text[shared:]))
            env.out.print(body)
        else:
            env.line(title)
            if shared:
                env.line(f"[overlap] {chunk.text[:shared]}")
                env.line(f"[new] {chunk.text[shared:]}")
            else:
                env.line(chunk.text)
        prev = chunk


# -- rag config -------------------------------------------------------------------------

def setting_text(value: Any) -> str:
    """A setting's value as `rag config` and `rag status` print it (TOML-like)."""
    if isinstance(value, list):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def render_settings(env: Env, settings: Settings, *, as_json: bool) -> None:
    if as_json:
        env.print_json({
            "schema": "rag-cli/config/v1",
            "config_file": str(settings.config_file) if settings.config_file else None,
            "index_dir": str(settings.index_dir),
            "settings": {k: {"value": v, "source": src} for k, v, src in settings.items()},
        })
        return
    where = str(settings.config_file) if settings.config_file else "none (defaults, environment and flags)"
    if env.rich_stdout:
        table = Table(title=None, show_edge=False, header_style="bold")
        for column in ("key", "value", "source"):
            table.add_column(column)
        for key, value, source in settings.items():
            table.add_row(Text(key), Text(setting_text(value)),
                          Text(source, style="dim" if source == "default" else ""))
        env.out.print(Text(f"settings file: {where}"))
        env.out.print(Text(f"index folder:  {settings.index_dir}"))
        env.out.print(table)
    else:
        env.line(f"settings file: {where}")
        env.line(f"index folder: {settings.index_dir}")
        for key, value, source in settings.items():
            env.line(f"{key} = {setting_text(value)}  # {source}")


# -- rag ask ----------------------------------------------------------------------------

def _where(item: dict) -> str:
    parts = [shown_path(item["path"]) if item.get("path") else item["doc_id"]]
    if item.get("page_start") is not None:
        a, b = item["page_start"], item["page_end"]
        parts.append((f"p. {a}" if a == b else f"pp. {a}-{b}") + (" (OCR)" if item.get("ocr") else ""))
    elif item.get("ocr"):
        parts.append("(OCR)")
    if item.get("heading"):
        parts.append(item["heading"])
    return " · ".join(parts)


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def render_evidence(env: Env, evidence: list[dict[str, Any]]) -> None:
    """Under the answer (`rag ask --evidence`): each sentence's quote, with where it stands, or
    that no source supports it."""
    if not evidence:
        return
    if env.rich_stdout:
        env.out.print(Text("\nEvidence", style="bold"))
    else:
        env.line()
    for e in evidence:
        if not e["supported"]:
            line = f"  ✗ unsupported: {_snippet(e['sentence'], 120)}"
            if env.rich_stdout:
                env.out.print(Text(line, style="yellow"))
            else:
                env.line(line)
            continue
        where = f"    — {_where(e)}, chars {e['start']}-{e['end']} (score {e['score']:.2f})"
        quote = f"  “{_snippet(e['text'], 400)}”"
        if env.rich_stdout:
            env.out.print(Text(quote))
            env.out.print(Text(where, style="dim"))
        else:
            env.line(quote)
            env.line(where)


def render_answer(env: Env, answer: Any, *, as_json: bool, streamed: bool, evidence: bool = False) -> None:
    """The answer: streamed text already on screen (terminal), or the plain text (piped); with
    ``evidence``, the quotes that support it under it."""
    if as_json:
        env.print_json({**answer.to_dict(), "run_id": observe.run_id()})
        return
    data = safe_tree(answer.to_dict())  # document and model text: no terminal control codes
    if answer.error is not None or not answer.model and not answer.refused:
        # Retrieve-only, or the model failed: the passages are the result.
        if answer.error is not None:
            env.error(f"no generated answer: {answer.error}", "the best passages follow")
        for i, p in enumerate(data["passages"], start=1):
            head = f"[{i}] {_where(p)} (score {p['score']:.2f})"
            if env.rich_stdout:
                env.out.print(Text(head, style="bold cyan"))
                env.out.print(Text(p["text"]))
            else:
                env.line(head)
                env.line(p["text"])
            env.line()
        return
    if not env.rich_stdout:
        env.line(answer.answer)  # piped: only the answer (and its quotes with --evidence)
        if evidence:
            render_evidence(env, data["evidence"])
        return
    if streamed and answer.extracted:
        env.line()
        env.err.print(Text("(the model's answer is not supported by the sources; the closest sentence of "
                           "the sources instead:)", style="dim"))
        env.out.print(Text(data["answer"]))
    elif streamed:
        env.line()
        if answer.refused or answer.removed_citations:
            # What streamed is the model's raw text; say what the checks made of it.
            note = ("(refused: the documents do not hold the answer)" if answer.refused else
                    f"({answer.removed_citations} citation(s) to sources that do not exist removed)")
            env.err.print(Text(note, style="dim"))
    else:
        env.out.print(Text(data["answer"]))
    cited = [c for c in data["citations"]]
    if answer.refused and answer.refusal_reason in ("low_score", "no_passages"):
        env.err.print(Text("no passage was relevant enough (retrieval.min_score)", style="dim"))
    elif answer.refused and answer.refusal_reason == "unknown_name":
        env.err.print(Text("the question names something no document mentions (retrieval.refuse_unknown_names)",
                           style="dim"))
    if evidence:
        render_evidence(env, data["evidence"])
    if cited:
        env.out.print(Text("\nSources", style="bold"))
        for c in cited:
            env.out.print(Text.assemble((f"[{c['number']}] ", "bold cyan"), _where(c),
                                        (f"  score {c['score']:.2f}", "dim")))
            env.out.print(Text("    " + _snippet(c["text"]), style="dim"))


# -- rag eval ---------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _bar(value: float, scale: float, width: int = 30) -> str:
    filled = 0 if scale <= 0 else int(round(width * min(value, scale) / scale))
    return "█" * filled + "·" * (width - filled)


def render_eval(env: Env, reports: list[Any], comparison: list[Any] | None, ks: tuple[int, ...]) -> None:
    """One report: metrics, latency and small charts. Several: side by side with the change."""
    first = reports[0]
    note = f"{first.counts.get('questions', 0)} questions from {shown_path(first.questions_file)}"
    if first.interrupted:
        note += " (interrupted: results so far)"
    if comparison is not None:
        labels = [r.label for r in reports]
        if env.rich_stdout:
            table = Table(show_edge=False, header_style="bold")
            table.add_column("metric")
            for label in labels:
                table.add_column(Text(label), justify="right")
            table.add_column("change", justify="right")
            for name, values, delta in comparison:
                style = "" if delta is None or abs(delta) < 1e-9 else ("green" if delta > 0 else "red")
                table.add_row(name, *[_fmt(v) for v in values], Text("—" if delta is None else f"{delta:+.3f}",
                                                                     style=style))
            for stage in ("retrieve", "generate", "total"):
                vals = [r.latency.get(stage, {}).get("p50") for r in reports]
                if any(v is not None for v in vals):
                    table.add_row(f"{stage} p50 (s)", *[_fmt(v) for v in vals], "")
            env.out.print(Text(note, style="bold"))
            env.out.print(table)
        else:
            env.line(note)
            env.line("metric\t" + "\t".join(labels) + "\tchange")
            for name, values, delta in comparison:
                change = "—" if delta is None else f"{delta:+.3f}"
                env.line(f"{name}\t" + "\t".join(_fmt(v) for v in values) + f"\t{change}")
            for stage in ("retrieve", "generate", "total"):
                vals = [r.latency.get(stage, {}).get("p50") for r in reports]
                if any(v is not None for v in vals):
                    env.line(f"{stage} p50 (s)\t" + "\t".join(_fmt(v) for v in vals) + "\t")
        return
    rep = first
    rows = [(k, v) for k, v in rep.metrics.items()]
    lat = [(stage, d["p50"], d["p95"]) for stage, d in rep.latency.items()]
    if env.rich_stdout:
        env.out.print(Text(note, style="bold"))
        table = Table(show_edge=False, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in rows:
            table.add_row(name, _fmt(value))
        env.out.print(table)
        recalls = [(k, rep.metrics.get(f"recall@{k}")) for k in ks if rep.metrics.get(f"recall@{k}") is not None]
        if recalls:
            env.out.print(Text("\nrecall@k", style="bold"))
            for k, value in recalls:
                env.out.print(Text(f"  @{k:<3} {_bar(value, 1.0)} {value:.3f}"))
        if lat:
            env.out.print(Text("\nlatency (s): p50 █, p95 ·", style="bold"))
            top = max(p95 for _, _, p95 in lat) or 1.0
            for stage, p50, p95 in lat:
                bar = _bar(p50, top)
                tail = _bar(p95, top)
                beyond = tail[bar.count("█"): tail.count("█")].replace("█", "·")  # from p50 to p95
                env.out.print(Text(f"  {stage:<9}{bar[: bar.count('█')]}{beyond}  {p50:.3f} / {p95:.3f}"))
        if rep.models:
            env.out.print(Text("models: " + ", ".join(f"{k} ({v})" for k, v in rep.models.items()), style="dim"))
    else:
        env.line(note)
        for name, value in rows:
            env.line(f"{name}\t{_fmt(value)}")
        for stage, p50, p95 in lat:
            env.line(f"latency.{stage}\tp50 {p50:.3f}\tp95 {p95:.3f}")
        if rep.models:
            env.line("models\t" + ", ".join(f"{k} ({v})" for k, v in rep.models.items()))


# -- rag chat ---------------------------------------------------------------------------

def render_sources(env: Env, citations: Any) -> None:
    """`/sources`: every source the last answer was given, cited ones marked, with path, pages
    and heading."""
    if not citations:
        env.line("no sources yet: ask a question first")
        return
    for c in safe_tree([c.to_dict() for c in citations]):
        mark = "*" if c["cited"] else " "
        if env.rich_stdout:
            env.out.print(Text.assemble((f"{mark}[{c['number']}] ", "bold cyan" if c["cited"] else "cyan"),
                                        _where(c), (f"  score {c['score']:.2f}", "dim")))
            env.out.print(Text("    " + _snippet(c["text"]), style="dim"))
        else:
            env.line(f"{mark}[{c['number']}] {_where(c)}  score {c['score']:.2f}")
    if env.rich_stdout:
        env.err.print(Text("* cited in the answer", style="dim"))


def render_chat_line(env: Env, answer: Any, *, as_json: bool, search_query: str) -> None:
    """A piped `rag chat` turn: one line, the answer (or the refusal) with its newlines collapsed;
    with --json, `rag ask --json`'s object on one line, with the retrieval query beside it. A
    failed generation is an empty line (the error on stderr)."""
    if as_json:
        import json

        data = {**answer.to_dict(), "search_query": search_query, "run_id": observe.run_id()}
        env.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    else:
        if answer.error is not None:
            env.error(f"no generated answer: {answer.error}")
        env.line(" ".join(answer.answer.split()) if answer.error is None else "")
    env.stdout.flush()
