"""Question files (JSONL; the format of ../shared/eval/README.md), read with clear errors."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rag_cli.errors import InputError


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    answers: tuple[str, ...] = ()
    relevant: tuple[str, ...] = ()
    answerable: bool = True
    type: str = ""


def _strings(value: object, field: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise InputError(f"{where}: '{field}' must be a list of strings")
    return tuple(str(v) for v in value)


def load_questions(path: Path) -> list[Question]:
    """Every question of a file; a malformed line is an error naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such question file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    out: list[Question] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: not a JSON object")
        qid, text = row.get("id"), row.get("question")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise InputError(f"{where}: no 'id'")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: no 'question' text")
        if str(qid) in seen:
            raise InputError(f"{where}: duplicate id {qid!r}")
        seen.add(str(qid))
        answerable = row.get("answerable", True)
        if not isinstance(answerable, bool):
            raise InputError(f"{where}: 'answerable' must be true or false")
        out.append(Question(qid=str(qid), question=text.strip(), answers=_strings(row.get("answers"), "answers", where),
                            relevant=_strings(row.get("relevant"), "relevant", where), answerable=answerable,
                            type=str(row.get("type") or "")))
    if not out:
        raise InputError(f"{path}: no questions")
    return out


def select(questions: list[Question], *, limit: int | None = None, sample: int | None = None,
           seed: int = 0) -> list[Question]:
    """The first ``limit`` questions, or a seeded random ``sample`` of them (in file order)."""
    if sample is not None and sample < len(questions):
        picked = sorted(random.Random(seed).sample(range(len(questions)), sample))
        questions = [questions[i] for i in picked]
    if limit is not None:
        questions = questions[:limit]
    return questions
