"""`rag status`"""

from __future__ import annotations

import time
from datetime import datetime

import typer
from rich.text import Text

from rag_cli import observe
from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json, settings_for
from rag_cli.models import IndexStatus
from rag_cli.status import human_bytes


def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Show what the index holds, how it was built and whether a `rag serve` serves it (loads no model)."""
    from rag_cli.api import Index

    env = env_of(ctx)
    started = time.perf_counter()
    report = Index(settings_for(env, {})).status()  # IndexNotFound: exit 4
    if as_json:
        env.print_json(report.to_dict())
    else:
        for label, value in _rows(report):
            if env.rich_stdout:
                env.out.print(Text.assemble((f"{label:<10}", "bold"), value))
            else:
                env.line(f"{label:<10}{value}")
    observe.timings("status", {"total": time.perf_counter() - started}, chunks=report.chunks)


def _rows(st: IndexStatus) -> list[tuple[str, str]]:
    b, f = st.build, st.files
    where = st.store or st.index_dir
    rows = [("index", f"{where} ({human_bytes(st.size_bytes)} on disk" + (" here: local caches)" if st.store else ")"))]
    problems = ", ".join(f"{f[k]} {k}" for k in ("pending", "failed", "skipped") if f.get(k))
    rows.append(("contents", f"{f['total']} files" + (f" ({problems})" if problems else "")
                 + f", {st.documents} documents, {st.chunks} chunks"))
    if st.roots:
        rows.append(("roots", ", ".join(st.roots)))
    if st.dirty:
        state = (f"a `rag index` (pid {st.writer_pid}) is writing" if st.writer_pid else
                 "a run from the folder that writes the collection is writing, or was interrupted" if st.store else
                 "a `rag index` run was interrupted: run `rag index` to finish it")
        rows.append(("updated", f"{state}; since {_when(st.updated)}"))
    else:
        rows.append(("updated", _when(st.updated) if st.updated else "never finished: run `rag index`"))
    rows.append(("embedding", f"{b.get('embedding.model')} ({b.get('embedding.backend')}, "
                 f"{b.get('embedding.dimension')} dimensions)" if b else "no build record"))
    if b:
        rows.append(("chunking", f"{b.get('chunking.strategy')}, size {b.get('chunking.size')}, overlap "
                     f"{b.get('chunking.overlap')}, min_size {b.get('chunking.min_size')}, context header "
                     f"{'on' if b.get('chunking.context_header') else 'off'}"))
    llm = st.llm
    model = llm["model"] if not llm["url"] else f"the server at {llm['url']}" + (
        f" (model {llm['model']})" if llm["model"] != "bundled" else "")
    rows.append(("llm", model + (f"; strong: {llm['strong_model']}" if llm["strong_model"] else "")))
    from rag_cli.cli.render import setting_text  # rich.table and the rest only when it prints

    changed = [f"{k} = {setting_text(v)} ({src})" for k, v, _, src in st.changed_settings]
    rows.append(("settings", "defaults" if not changed else f"{len(changed)} differ from the defaults"))
    rows += [("", f"  {line}") for line in changed]
    qlog = st.query_log
    if qlog:
        rows.append(("query log", ("on" if qlog["enabled"] else "off (ask.log)")
                     + (f", {human_bytes(qlog['size_bytes'])} in {qlog['path']} (see `rag log stats`)"
                        if qlog["size_bytes"] else "")))
    serve = st.serve
    rows.append(("serve", f"{serve['state']}" + (f" (pid {serve['pid']})" if serve.get("pid") else "")))
    return rows


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    ago = max(0.0, time.time() - ts)
    span = f"{ago:.0f} s" if ago < 120 else f"{ago / 60:.0f} min" if ago < 7200 else f"{ago / 3600:.1f} h" \
        if ago < 172800 else f"{ago / 86400:.0f} days"
    return f"{datetime.fromtimestamp(ts).isoformat(sep=' ', timespec='seconds')} ({span} ago)"


def register(app: typer.Typer) -> None:
    app.command("status")(boundary(status))
