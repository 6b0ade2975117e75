"""Observability: the run id, per-stage timings as log events, and OpenTelemetry spans.

- ``run_id()``: a random id made once per process. Every JSON log line carries it, and so do the
  root spans and the ``--json`` documents of `rag ask` and `rag index`.
- ``timings(command, stages, **fields)``: one INFO record on the ``rag_cli.timings`` logger. Its
  message is the human line (``-v``); its extra fields are the structured event (``--log-format
  json``): ``{"event": "timings", "command": "ask", "stages": {...}, ...}``.
- ``trace_carrier()`` / ``span(..., remote_parent=...)``: the W3C trace context a `rag ask`
  sends with a request to `rag serve`, whose request span then joins the client's trace.
- ``failed(command, exit_code, error)``: the same event for a command that failed, with
  ``outcome``, ``exit_code`` and ``error``; the CLI's error boundary sends it.
- ``span(name, **attrs)``: a context manager around a stage. Tracing is on only when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; otherwise
  ``span`` returns one shared no-op and opentelemetry is never imported (a module-level flag,
  read once). Spans go to a tracer provider of our own, never the global one: chromadb sets the
  global provider when ``CHROMA_OTEL_*`` is configured, and neither setup overrides the other
  (chromadb's spans still nest under ours, through the shared context).
- ``JsonFormatter`` and ``configure_logging()``: what the CLI installs for ``-v`` and
  ``--log-format json``.

Standard library only at import: the CLI imports this module on every start.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

log = logging.getLogger(__name__)
TIMINGS_LOGGER = "rag_cli.timings"
CLI_LOGGER = "rag_cli.cli"  # the CLI's own messages: warnings, errors, `rag serve` events

_RUN_ID = os.urandom(8).hex()  # not `secrets`: its imports cost more than the id is worth
_STARTED = time.perf_counter()  # the CLI imports this module first thing: "wall" counts from here

FLUSH_SECONDS = 2.0  # the most a command waits for its spans to leave at its end (a dead collector)
SHUTDOWN_SECONDS = 1.0  # and the process at exit

# -- the run id -------------------------------------------------------------------------------


def run_id() -> str:
    """This process's random id (16 hex digits), the same for every line, span and document."""
    return _RUN_ID


def wall_seconds() -> float:
    """Seconds since the CLI started (Python's own start-up, ~0.1 s, not included)."""
    return time.perf_counter() - _STARTED


# -- timings ----------------------------------------------------------------------------------


def summarize(rows: Iterable[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-stage totals and medians over many timings (`rag eval`'s questions)."""
    import statistics

    values: dict[str, list[float]] = {}
    for row in rows:
        for stage, seconds in row.items():
            values.setdefault(stage, []).append(float(seconds))
    return ({k: sum(v) for k, v in values.items()}, {k: statistics.median(v) for k, v in values.items()})


def format_timings(command: str, stages: Mapping[str, float], medians: Mapping[str, float] | None = None,
                   note: str = "", label: str = "") -> str:
    """``timings ask: embed 0.012 s, retrieve 0.034 s (dense 0.010 s, keyword 0.020 s), …, total 0.52 s``.

    A stage named ``parent.child`` is shown in brackets after ``parent``, by its short name;
    ``total`` comes last; a stage that did not run (exactly 0) is left out of the line (not out
    of the event). With medians (`rag eval`): ``retrieve 1.700 s (median 0.006 s; dense …)``.
    A label goes in square brackets: ``timings serve [ask]: …``."""
    medians = medians or {}
    parts = []
    for name, seconds in stages.items():
        if "." in name or name == "total" or seconds == 0:
            continue
        inner = [f"median {medians[name]:.3f} s"] if name in medians else []
        children = [f"{c.split('.', 1)[1]} {v:.3f} s" for c, v in stages.items() if c.startswith(name + ".") and v]
        if children:
            inner = ["; ".join([*inner, ", ".join(children)])]
        parts.append(f"{name} {seconds:.3f} s" + (f" ({inner[0]})" if inner else ""))
    parts.extend(f"{c} {v:.3f} s" for c, v in stages.items() if "." in c and c.split(".", 1)[0] not in stages and v)
    if "total" in stages:
        parts.append(f"total {stages['total']:.3f} s" + (f" (median {medians['total']:.3f} s)" if "total" in medians
                                                         else ""))
    title = f"{command} [{label}]" if label else command
    return f"timings {title}: {', '.join(parts)}" + (f"; {note}" if note else "")


def timings(command: str, stages: Mapping[str, float], *, medians: Mapping[str, float] | None = None,
            label: str = "", note: str = "", **fields: Any) -> None:
    """Report a command's (or a served request's) stage timings: the ``timings`` log event, and
    attributes of the current span when tracing. Seconds are rounded to 0.1 ms. ``label`` names
    what was timed within the command (an eval configuration, a served request's op); ``note``
    is for the human line only; ``fields`` go into the event (None values dropped)."""
    event: dict[str, Any] = {"event": "timings", "command": command,
                             "stages": {k: round(float(v), 4) for k, v in stages.items()}}
    if medians is not None:
        event["medians"] = {k: round(float(v), 4) for k, v in medians.items()}
    event["wall"] = round(wall_seconds(), 4)
    if label:
        event["label"] = label
    event.update({k: v for k, v in fields.items() if v is not None})
    logger = logging.getLogger(TIMINGS_LOGGER)
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", format_timings(command, stages, medians, note, label), extra={"rag_event": event})
    if _tracer is not None:
        current = _trace_api().get_current_span()
        current.set_attributes({f"rag.timings.{k}": v for k, v in event["stages"].items()})


def failed(command: str, exit_code: int, error: str) -> None:
    """Report a command that ended with an error (or Ctrl-C): the same ``timings`` event, with
    ``outcome: "failed"``, its exit code and the error's class, so a log that ends without an
    outcome ended with a crash; on the command's span, the exit code and the error's class."""
    timings(command, {"total": wall_seconds()}, note=f"failed, exit code {exit_code} ({error})",
            outcome="failed", exit_code=exit_code, error=error)
    if _tracer is not None:  # the error status comes from the typer.Exit that leaves the span
        _trace_api().get_current_span().set_attributes({"rag.exit_code": exit_code, "rag.error": error})


# -- spans ------------------------------------------------------------------------------------


class _NoSpan:
    """What ``with span(...) as s`` gives when tracing is off."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def record_exception(self, exception: BaseException, **_: Any) -> None:
        pass


_NO_SPAN = nullcontext(_NoSpan())  # reusable: nullcontext keeps no state


def _wanted(env: Mapping[str, str]) -> bool:
    """Tracing is configured the standard OpenTelemetry way: an OTLP endpoint in the environment
    (and not switched off by OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


_WANTED = _wanted(os.environ)
_tracer: Any = None  # an opentelemetry Tracer once tracing has started
_provider: Any = None
_processor: Any = None  # the batch span processor of a provider made here
_stuck = False  # an export did not finish in time (a dead collector): no more waiting for it
_owned = False  # the provider was made here from the environment: flushed and shut down here
_setup_lock = threading.Lock()


def tracing() -> bool:
    """Whether spans are recorded (or will be, at the first ``span``)."""
    return _tracer is not None or _WANTED


def span(name: str, *, remote_parent: Mapping[str, str] | None = None, **attrs: Any) -> Any:
    """A span around a stage; attributes are named ``rag.<key>`` (None values dropped). A span
    with no parent in this process (a command's, a served request's) also carries
    ``rag.run_id``. ``remote_parent``: another process's ``trace_carrier()`` (a `rag ask` that
    sent the request `rag serve` answers), whose span becomes this one's parent, so the two
    processes' spans form one trace. With tracing off: a shared no-op, nothing imported."""
    if _tracer is None:
        if not _WANTED or not _start():
            return _NO_SPAN
    attributes = {f"rag.{k}": _attribute(v) for k, v in attrs.items() if v is not None}
    if not _trace_api().get_current_span().get_span_context().is_valid:
        attributes["rag.run_id"] = _RUN_ID
    context = None
    if remote_parent:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier = {k: v for k, v in remote_parent.items() if isinstance(k, str) and isinstance(v, str)}
        context = TraceContextTextMapPropagator().extract(carrier)  # a malformed one: no parent
    return _tracer.start_as_current_span(name, context=context, attributes=attributes)


def trace_carrier() -> dict[str, str]:
    """The current span as W3C trace-context fields (``traceparent``, ``tracestate``) to send to
    another process; empty when tracing is off or there is no current span."""
    if _tracer is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


@contextmanager
def command(name: str) -> Iterator[Any]:
    """The root span of a CLI command; at its end the spans are flushed (bounded: a dead
    collector costs at most FLUSH_SECONDS)."""
    if not tracing():
        yield _NoSpan()
        return
    try:
        with span(f"rag {name}", command=name) as root:
            yield root
    finally:
        flush()


def carried(fn: Any) -> Any:
    """``fn`` to run on another thread inside the current span (threads start with an empty
    context); ``fn`` itself when tracing is off."""
    if not tracing():
        return fn
    import contextvars

    context = contextvars.copy_context()
    return lambda *args, **kwargs: context.run(fn, *args, **kwargs)


def use_provider(provider: Any) -> None:
    """Record spans with ``provider`` (tests: an SDK TracerProvider with an in-memory exporter);
    None switches tracing off again. This module never shuts down a provider it was given."""
    global _tracer, _provider, _owned
    with _setup_lock:
        _provider, _owned = provider, False
        _tracer = provider.get_tracer("rag_cli") if provider is not None else None


def flush(timeout: float = FLUSH_SECONDS) -> None:
    """Send the finished spans, waiting at most ``timeout`` seconds (the SDK's own force_flush
    does not honour a timeout, so it runs on a daemon thread that is left behind if it hangs)."""
    global _stuck
    if _provider is not None and not _stuck:
        _stuck = not _bounded(_provider.force_flush, timeout)


def _bounded(call: Any, timeout: float) -> bool:
    """Run ``call`` on a daemon thread for at most ``timeout`` seconds; whether it finished."""
    worker = threading.Thread(target=call, name="rag-otel-flush", daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()


def _attribute(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return str(value)


def _trace_api() -> Any:
    from opentelemetry import trace

    return trace


def _start() -> bool:
    """Make the tracer from the environment, once; a failure logs one warning and turns tracing
    off (a command never fails because of its telemetry)."""
    global _tracer, _provider, _processor, _owned, _WANTED
    with _setup_lock:
        if _tracer is not None:
            return True
        if not _WANTED:
            return False
        try:
            _provider, _processor = _provider_from_env(os.environ)
        except Exception as exc:  # ImportError, a bad protocol or endpoint
            _WANTED = False
            log.warning("OpenTelemetry tracing is off: %s: %s", type(exc).__name__, exc)
            return False
        _owned = True
        _tracer = _provider.get_tracer("rag_cli")
        atexit.register(_shutdown)
        return True


def _provider_from_env(env: Mapping[str, str]) -> tuple[Any, Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    from rag_cli import __version__

    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    exporter: type[SpanExporter]
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter
    else:
        raise ValueError(f"OTLP protocol {protocol!r} is not supported (grpc or http/protobuf)")
    attributes = {"service.version": __version__}
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attributes["service.name"] = "rag-cli"
    # Our own exit handler, bounded: the SDK's waits up to 30 s for a collector that is not there.
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    processor = BatchSpanProcessor(exporter())
    provider.add_span_processor(processor)
    return provider, processor


def _shutdown() -> None:
    processor = _processor
    if processor is None or not _owned or _stuck:
        return  # stuck: the exporter's thread is a daemon, and the process leaves without it
    flush(SHUTDOWN_SECONDS)
    if not _stuck:
        _bounded(processor.shutdown, SHUTDOWN_SECONDS)  # its own wait for the exporter is 30 s


# -- logging ----------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, run_id, then the
    record's extra fields (a timings event's fields at the top level), the trace and span ids
    when tracing, and ``exc`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        out: dict[str, Any] = {"ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
                               "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
                               "run_id": _RUN_ID}
        for key, value in record.__dict__.items():
            if key == "rag_event":
                out.update(value)
            elif key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if _tracer is not None:
            context = _trace_api().get_current_span().get_span_context()
            if context.is_valid:
                out["trace_id"], out["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


HUMAN_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab shown as ``\\xNN``: a
    document (or a model) that holds terminal escape sequences cannot recolour, retitle or
    clear the user's terminal (the CLI's ``safe``; log lines quote file names and documents)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if text else text


class HumanFormatter(logging.Formatter):
    """The -v format, with control characters made visible (JSON lines escape them anyway)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class _CliHandler(logging.StreamHandler):
    """The handler ``configure_logging`` adds (``unconfigure_logging`` removes these only)."""


def configure_logging(log_format: str, verbose: bool, stream: Any) -> None:
    """The CLI's logging, set again by every invocation (tests invoke the app many times):

    - human, no -v: not configured (Python prints warnings as bare lines);
    - human, -v: every logger's warnings, rag_cli's debug lines and the timings line;
    - json: one JSON object per line on ``stream``. Without -v: warnings and errors from every
      logger, the CLI's own messages and the timings event at the end of each command; rag_cli's
      INFO lines are details for -v. With -v: rag_cli's debug and info lines too.
    """
    unconfigure_logging()
    root = logging.getLogger()
    rag, cli, timing = (logging.getLogger(n) for n in ("rag_cli", CLI_LOGGER, TIMINGS_LOGGER))
    rag.setLevel(logging.DEBUG if verbose else logging.NOTSET)
    cli.setLevel(logging.INFO if log_format == "json" else logging.NOTSET)
    timing.setLevel(logging.INFO if log_format == "json" or verbose else logging.NOTSET)
    if log_format != "json" and not verbose:
        return
    handler = _CliHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else HumanFormatter(HUMAN_FORMAT))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)


def unconfigure_logging() -> None:
    """Undo ``configure_logging`` (at the end of a command: the stream may not outlive it)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(handler)
    for name in ("rag_cli", CLI_LOGGER, TIMINGS_LOGGER):
        logging.getLogger(name).setLevel(logging.NOTSET)
