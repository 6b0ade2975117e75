"""The error tree and the exit codes.

Library code raises a :class:`RagError` subclass; the CLI's single error boundary
prints ``message`` (and ``hint``) on one line each and exits with ``exit_code``.
Anything that is not a ``RagError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in README.md ("Exit codes")."""

    OK = 0
    ERROR = 1  # an unexpected error (a bug): the traceback is printed
    USAGE = 2  # bad command line, bad settings or a bad .rag.toml
    PARTIAL = 3  # `rag index`: some files or records could not be indexed
    INDEX = 4  # no index, a corrupt index, or one built with other settings
    MODEL = 5  # a model could not be loaded or failed
    REFUSED = 6  # `rag ask`: the documents do not hold the answer
    BUSY = 7  # another `rag index` holds the index lock
    GATE = 8  # `rag eval --baseline`: a metric fell by more than --max-drop
    LLM_UNAVAILABLE = 9  # the llm.url server could not be reached or kept failing; the passages were printed
    INTERRUPTED = 130  # Ctrl-C


class RagError(Exception):
    """Base class of every error the tool reports without a traceback."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(RagError):
    """A setting, a settings file or a command-line value is wrong."""

    exit_code = ExitCode.USAGE


class InputError(RagError):
    """A path given on the command line does not exist or cannot be used."""

    exit_code = ExitCode.USAGE


class IndexNotFound(RagError):
    exit_code = ExitCode.INDEX


class IndexMismatch(RagError):
    """The index was built with settings that differ from the current ones."""

    exit_code = ExitCode.INDEX


class IndexCorrupt(RagError):
    exit_code = ExitCode.INDEX


class IndexBusy(RagError):
    """Another process holds the index's write lock."""

    exit_code = ExitCode.BUSY


class StoreError(RagError):
    """The vector store failed (translated from the store's own exception)."""

    exit_code = ExitCode.INDEX


class ModelLoadError(RagError):
    exit_code = ExitCode.MODEL


class ModelDownloadError(ModelLoadError):
    """`rag models pull` could not download a model, or the file failed its checksum."""


class GenerationError(RagError):
    """The model loaded but failed while generating."""

    exit_code = ExitCode.MODEL


class GeneratorUnavailable(GenerationError):
    """The language-model server (llm.url) could not be reached, timed out or kept failing
    (or its circuit breaker is open): nothing is wrong with the question or the model."""

    exit_code = ExitCode.LLM_UNAVAILABLE


class DocumentError(Exception):
    """One document cannot be read; the indexer records it and carries on.

    Not a :class:`RagError`: it never reaches the CLI's error boundary, it becomes a
    failed entry in the index report.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
