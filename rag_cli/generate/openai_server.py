"""A Generator that streams answers from an OpenAI-compatible server (``llm.url``): llama.cpp's
``llama-server``, ``python -m llama_cpp.server``, or anything else that speaks
``POST /chat/completions`` with ``"stream": true``.

Nothing here may hang or leak a third-party exception:

- **Timeouts.** ``connect_timeout`` to connect; ``timeout`` for the first token and then between
  tokens (httpx's read timeout covers a silent server; the clock in ``_read_stream`` covers one
  that only sends keep-alive comments).
- **Retries.** Up to ``retries`` more attempts, with exponential backoff and jitter, for a
  connection error, a connect timeout, or HTTP 429/502/503/504 (``Retry-After`` honoured up to
  the cap). Never once text has reached ``on_text``: the caller has shown it already. Never after
  ``timeout`` either: a server that accepted the request and then stayed silent is stuck or still
  busy with it, and sending it again would triple the wait (3 × 60 s with the defaults) and queue
  more work on it; that failure counts towards the breaker at once.
  Other 4xx answers are the request's fault and are reported at once, with the server's message.
- **Circuit breaker** (``breaker.py``): consecutive failed requests open it, and while it is open
  calls fail at once, in this process and in the next ones.
- **Errors.** A server that cannot be reached, times out or keeps failing is
  ``GeneratorUnavailable`` (exit code 9: `rag ask` prints the passages instead); a request the
  server rejects, or a server error, is ``GenerationError`` (exit code 5). Every httpx exception is
  translated here. The API key (from the variable ``api_key_env`` names) is sent as a Bearer token
  and appears in no message or log line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rag_cli.errors import ConfigError, GenerationError, GeneratorUnavailable
from rag_cli.generate.breaker import CircuitBreaker
from rag_cli.model_files import BUNDLED_GGUF_ALIASES
from rag_cli.models import Generation

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 502, 503, 504})
BACKOFF_BASE = 0.5  # seconds before the first retry; doubled for each next one
BACKOFF_CAP = 8.0
TOKENIZE_TIMEOUT = 5.0  # a tokenize call is cheap; a server slow at it gets the estimate instead
DEFAULT_API_KEY_ENV = "RAG_LLM_API_KEY"


def is_local_model(name: str) -> bool:
    """A setting that names a model file or a bundled alias (not a name a server knows)."""
    if not name or name in BUNDLED_GGUF_ALIASES or name.startswith("hf:"):
        return True
    return name.lower().endswith(".gguf") or Path(name).expanduser().is_file()


def estimate_tokens(text: str) -> int:
    """A conservative token count when the server cannot count: a token per 3 UTF-8 bytes (real
    tokenizers average ~4 on English text, ~3 per CJK character) and never fewer than the words."""
    return max(len(text.split()), math.ceil(len(text.encode("utf-8")) / 3))


class _NotOpenAI(ValueError):
    """The server answered with something that is not an OpenAI-style stream or answer."""


class _Retryable(Exception):
    """A failure before any text that another attempt may not meet."""

    def __init__(self, reason: str, retry_after: float | None = None, *, again: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.again = again  # False: a failure another attempt would only repeat (a silent server)


@dataclass
class _Stream:
    """What one attempt gathered: the text passed to on_text, and the server's own counts."""

    pieces: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    done: bool = False  # a completion's first line is complete: the rest is not wanted
    finished: bool = False  # [DONE], a finish_reason, or ``done``: the answer is whole

    @property
    def started(self) -> bool:
        return bool(self.pieces)


def _server_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style ({"error": {"message"}}), FastAPI ({"detail"}) or plain answer."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("detail"):
            return str(data["detail"])
    text = " ".join(response.text.split())
    return text[:300] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:  # absent, or an HTTP date: the backoff decides
        return None


class OpenAIServerGenerator:
    """Chat (or completion) requests to an OpenAI-compatible server, streamed to ``on_text``."""

    def __init__(self, url: str, *, model: str = "", api_key_env: str = DEFAULT_API_KEY_ENV,
                 context_size: int = 2048, style: str = "chat", connect_timeout: float = 3.0,
                 timeout: float = 60.0, retries: int = 2, breaker_failures: int = 3,
                 breaker_cooldown: float = 30.0, backoff: float = BACKOFF_BASE) -> None:
        self.url = url.strip().rstrip("/")
        try:
            parsed = httpx.URL(self.url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ConfigError(f"llm.url {url!r} is not a URL ({exc})", hint="e.g. http://127.0.0.1:8080/v1") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"llm.url {url!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8080/v1")
        # llama-server's /tokenize and /props live at the server's root, beside /v1
        self.root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        self.requested = "" if is_local_model(model) else model  # sent as "model" when set
        self.name = self.requested or f"{parsed.host}:{parsed.port or ''}".rstrip(":")
        self.context_size = context_size
        self.style = "completion" if style == "completion" else "chat"
        self.api_key_env = api_key_env
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.breaker = CircuitBreaker(self.url, failures=breaker_failures, cooldown=breaker_cooldown,
                                      trial_window=connect_timeout + timeout)
        self._client: httpx.Client | None = None
        self._ready = False
        self._tokenizer: tuple[str, str] | None | bool = None  # (path, field) once found; False: none

    @classmethod
    def from_settings(cls, llm: Any, model: str) -> OpenAIServerGenerator:
        """The generator for ``model`` (a setting value) with the llm.* settings ``llm``."""
        return cls(llm.url, model=model, api_key_env=llm.api_key_env, context_size=llm.context_size,
                   style=llm.prompt_style, connect_timeout=llm.connect_timeout, timeout=llm.timeout,
                   retries=llm.retries, breaker_failures=llm.breaker_failures,
                   breaker_cooldown=llm.breaker_cooldown)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIServerGenerator({self.url!r}, model={self.requested!r})"

    # -- HTTP ------------------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        if self._client is None:
            headers = {"Accept": "application/json, text/event-stream"}
            key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(
                connect=self.connect_timeout, read=self.timeout, write=self.timeout, pool=self.connect_timeout))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _check(self, response: httpx.Response, what: str) -> None:
        """Raise for an answer that is not 200: _Retryable for the transient statuses, else GenerationError."""
        if response.status_code == 200:
            return
        response.read()
        message = _server_message(response)
        status = response.status_code
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}: {message}", _retry_after(response))
        if status >= 500:  # the server is there but failing: a model error, and one more strike
            self.breaker.failure(f"HTTP {status}")
            raise GenerationError(f"the language-model server at {self.url} failed on {what} (HTTP {status}): "
                                  f"{message}")
        self.breaker.success()  # it answered: the request, not the server, is wrong
        hint = None
        if status in (401, 403):
            hint = f"set the server's API key in ${self.api_key_env} (llm.api_key_env)"
        elif status == 404:
            hint = "llm.url is the server's OpenAI base URL, usually ending in /v1 (e.g. http://127.0.0.1:8080/v1)"
        raise GenerationError(f"the language-model server at {self.url} refused {what} (HTTP {status}): {message}",
                              hint=hint)

    def _attempts(self, what: str, attempt: Callable[[], Any], *, closes_breaker: bool = True) -> Any:
        """One call through the breaker, with its retries. An attempt raises _Retryable only while
        nothing has been streamed; a failure after text is GeneratorUnavailable at once.
        ``closes_breaker``: whether success closes the breaker (the warm-up probe's does not: a
        server that lists its models but fails every answer must still open it)."""
        wait = self.breaker.admit()
        if wait is not None:
            raise GeneratorUnavailable(
                f"the language-model server at {self.url} kept failing; skipping it for {wait:.0f} s more "
                "(its circuit breaker is open)",
                hint="start the server (or fix llm.url); llm.breaker_failures and llm.breaker_cooldown tune this")
        last, silent = "no attempt", False
        for number in range(self.retries + 1):
            try:
                result = attempt()
            except _Retryable as exc:
                last, silent = exc.reason, not exc.again
                if number == self.retries or silent:
                    break
                delay = min(BACKOFF_CAP, self.backoff * 2 ** number) * random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    delay = max(delay, min(BACKOFF_CAP, exc.retry_after))
                log.info("%s: %s; retry %d of %d in %.2f s", self.url, exc.reason, number + 1, self.retries, delay)
                time.sleep(delay)
                continue
            except GeneratorUnavailable as exc:
                self.breaker.failure(exc.message)
                raise
            if closes_breaker:
                self.breaker.success()
            return result
        self.breaker.failure(last)
        tries = f"{number + 1} attempts" if number else "1 attempt"
        hint = ("it took the request and sent nothing: it may be stuck, or still busy with a long prompt "
                "(raise llm.timeout for a big model on a CPU)") if silent else \
            "is the server running? check llm.url (rag config)"
        raise GeneratorUnavailable(f"the language-model server at {self.url} could not be reached or kept failing "
                                   f"({tries} at {what}): {last}", hint=hint)

    def _translate(self, exc: Exception, stream: _Stream | None, what: str) -> Exception:
        """An httpx exception as _Retryable (nothing streamed yet) or GeneratorUnavailable."""
        if isinstance(exc, httpx.ConnectTimeout):
            reason = f"no connection within {self.connect_timeout:g} s (llm.connect_timeout)"
        elif isinstance(exc, httpx.ConnectError):
            reason = f"cannot connect ({str(exc) or type(exc).__name__})"
        elif isinstance(exc, httpx.ReadTimeout):
            reason = f"no reply within {self.timeout:g} s (llm.timeout)"
        elif isinstance(exc, httpx.TimeoutException):
            reason = f"timed out ({type(exc).__name__})"
        else:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if stream is not None and stream.started:
            return GeneratorUnavailable(f"the language-model server at {self.url} stopped in the middle of {what}: "
                                        f"{reason}", hint="the text shown so far is incomplete")
        return _Retryable(reason, again=not isinstance(exc, httpx.ReadTimeout))

    # -- warm-up: is the server there, which model, how big a window -----------------------------------
    def warm_up(self) -> None:
        """Check that the server answers (with the retries and the breaker), once per generator;
        learn the model it serves and, from llama-server's /props, its context window."""
        if self._ready:
            return
        log.info("language model: the server at %s (timeouts: connect %g s, tokens %g s; %d retries; breaker %s)",
                 self.url, self.connect_timeout, self.timeout, self.retries, self.breaker.state())

        def probe() -> dict[str, Any]:
            try:
                response = self._http().get(f"{self.url}/models")
                if response.status_code in (401, 403) or response.status_code in RETRY_STATUS:
                    self._check(response, "the model list")
                return response.json() if response.status_code == 200 else {}  # no list: still there
            except httpx.HTTPError as exc:
                raise self._translate(exc, None, "the model list") from None
            except ValueError:
                return {}

        listed = self._attempts("the model list", probe, closes_breaker=False)
        data = listed.get("data") if isinstance(listed, dict) else None
        models = [m["id"] for m in data or [] if isinstance(m, dict) and m.get("id")]
        if not self.requested and models:
            self.requested = str(models[0])
            self.name = _display(self.requested)
        self._read_window()
        self._ready = True

    def _read_window(self) -> None:
        try:
            response = self._http().get(f"{self.root}/props", timeout=TOKENIZE_TIMEOUT)
            data = response.json() if response.status_code == 200 else {}
            n_ctx = (data.get("default_generation_settings") or {}).get("n_ctx") or data.get("n_ctx")
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        if isinstance(n_ctx, int) and 0 < n_ctx < self.context_size:
            log.info("%s: the server's context window is %d tokens (llm.context_size %d)", self.url, n_ctx,
                     self.context_size)
            self.context_size = n_ctx

    # -- tokens ----------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """The server's own count (llama-server: /tokenize; llama_cpp.server: /extras/tokenize),
        else ``estimate_tokens``. A server that cannot count is not asked again."""
        if not text:
            return 0
        if self._ready and self._tokenizer is not False:
            count = self._remote_count(text)
            if count is not None:
                return count
        return estimate_tokens(text)

    def _remote_count(self, text: str) -> int | None:
        candidates = [self._tokenizer] if isinstance(self._tokenizer, tuple) else [
            ("/tokenize", "content"), ("/extras/tokenize", "input")]
        for path, key in candidates:
            try:
                response = self._http().post(f"{self.root}{path}", json={key: text}, timeout=TOKENIZE_TIMEOUT)
                tokens = response.json().get("tokens") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                tokens = None
            if isinstance(tokens, list):
                self._tokenizer = (path, key)
                return len(tokens)
        log.info("%s: the server cannot count tokens; estimating them from the text's length", self.url)
        self._tokenizer = False
        return None

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Stream one answer. A completion prompt (``{"role": "prompt"}``, a base model) goes to
        /completions and its answer is its first non-empty line, as in-process."""
        self.warm_up()
        started = time.perf_counter()
        completion = bool(messages) and messages[0]["role"] == "prompt"
        body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stream": True,
                                "stream_options": {"include_usage": True}}
        if self.requested:
            body["model"] = self.requested
        if completion:
            path, body["prompt"] = "/completions", messages[0]["content"]
        else:
            path, body["messages"] = "/chat/completions", [dict(m) for m in messages]
        stream = _Stream()

        def attempt() -> None:
            stream.pieces.clear()  # (empty anyway: only an attempt that streamed nothing is retried)
            self._post_stream(path, body, stream, completion, on_text)

        self._attempts("an answer", attempt)
        text = "".join(stream.pieces)
        prompt_tokens = stream.usage.get("prompt_tokens") or sum(self.count_tokens(m["content"]) for m in messages)
        completion_tokens = stream.usage.get("completion_tokens") or self.count_tokens(text)
        return Generation(text=text, prompt_tokens=int(prompt_tokens), completion_tokens=int(completion_tokens),
                          seconds=time.perf_counter() - started, model=_display(stream.model) or self.name)

    def _post_stream(self, path: str, body: dict[str, Any], stream: _Stream, completion: bool,
                     on_text: Callable[[str], None] | None) -> None:
        try:
            with self._http().stream("POST", f"{self.url}{path}", json=body) as response:
                self._check(response, "the request")
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # A server that ignored "stream": one JSON answer
                    self._take(json.loads(response.read()), stream, completion, on_text)
                    return
                self._read_stream(response, stream, completion, on_text)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise self._translate(exc, stream, "an answer") from None
        except (json.JSONDecodeError, _NotOpenAI) as exc:
            self.breaker.failure("not an OpenAI stream")
            raise GenerationError(f"the language-model server at {self.url} sent something that is not an "
                                  f"OpenAI-style answer ({exc})",
                                  hint="is llm.url an OpenAI-compatible /v1 URL?") from None

    def _read_stream(self, response: httpx.Response, stream: _Stream, completion: bool,
                     on_text: Callable[[str], None] | None) -> None:
        """Server-sent events: one JSON chunk per ``data:`` line until ``data: [DONE]``; comments
        (``: ping``) and other fields are skipped, but do not count as progress."""
        last_token = time.monotonic()
        for line in response.iter_lines():
            if line.startswith("data:"):
                payload = line[5:].strip()
                if payload == "[DONE]":
                    stream.finished = True
                    return
                if payload and self._take(json.loads(payload), stream, completion, on_text):
                    last_token = time.monotonic()
                if stream.done:
                    stream.finished = True
                    return
            if time.monotonic() - last_token > self.timeout:
                raise httpx.ReadTimeout("only keep-alive messages")
        if not stream.finished:  # the connection closed in the middle of the answer
            raise httpx.RemoteProtocolError("the stream ended before its [DONE]")

    def _take(self, chunk: Any, stream: _Stream, completion: bool, on_text: Callable[[str], None] | None) -> bool:
        """Pass one chunk's text on; True when it held text. Sets ``stream.done`` when a completion's
        first line is complete (the rest is not wanted: leaving the stream closes the connection,
        and the server stops generating)."""
        if not isinstance(chunk, dict):
            raise _NotOpenAI(f"a chunk that is not an object: {str(chunk)[:80]}")
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise GenerationError(f"the language-model server at {self.url} failed while answering: {message}")
        stream.model = stream.model or str(chunk.get("model") or "")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            stream.usage.update({k: usage[k] for k in ("prompt_tokens", "completion_tokens") if usage.get(k)})
        timings = chunk.get("timings")  # llama-server's own counts
        if isinstance(timings, dict):
            stream.usage.setdefault("prompt_tokens", timings.get("prompt_n"))
            stream.usage.setdefault("completion_tokens", timings.get("predicted_n"))
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return False
        choice = choices[0]
        stream.finished = stream.finished or bool(choice.get("finish_reason"))
        message = choice.get("delta") or choice.get("message") or {}
        delta = choice.get("text") if completion else (message.get("content") if isinstance(message, dict) else None)
        if not delta:
            return False
        line_ends = False
        if completion:
            # A base model's answer is its first non-empty line (see LlamaCppGenerator.generate).
            if not stream.pieces:
                delta = delta.lstrip()
            delta, newline, _ = delta.partition("\n")
            line_ends = bool(newline)
        if delta:
            stream.pieces.append(delta)
            if on_text:
                on_text(delta)
        if line_ends and stream.pieces:
            stream.done = True
        return bool(delta)


def _display(model_id: str) -> str:
    """A served model's name as answers show it: a GGUF path (llama_cpp.server's ids) by its file name."""
    return Path(model_id).name if model_id.lower().endswith(".gguf") else model_id
