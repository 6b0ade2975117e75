"""`rag chat`: a conversation over one index, with follow-up questions.

Each turn is a `rag ask` (``api.Index.ask``: the same Asker stages, gate, citations and refusals)
on one warm ``Index`` kept for the session. What a conversation adds is the retrieval query: a
follow-up such as "and at what temperature?" names nothing to search for, so it is retrieved
with the questions the conversation is about; the model still gets the question as typed.

How the query is made is ``Conversation.method`` (``METHODS``), chosen on
``bench/bench_chat.py`` (docs/commands.md, `rag chat`):

- ``none``: the question alone (what `rag ask` does);
- ``previous``: the previous turn's question, then this one, always;
- ``follow-up`` (the default): when the question looks like a follow-up (``looks_like_follow_up``:
  it opens with "and", "what about", ..., holds a pronoun, or is at most three words), the
  questions of the current topic (its first question and the last follow-ups, ``max_questions``
  in all) then this one; any other question starts a new topic and is retrieved alone.

No typer or rich here: the command (cli/chat_cmd.py) reads lines and renders the answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_cli.api import Asked, Index
    from rag_cli.models import Answer, Citation

METHODS = ("none", "previous", "follow-up")
DEFAULT_METHOD = "follow-up"

# Openers of a question that continues the last one ("and in the fridge?", "what about Sicily?").
FOLLOW_UP_OPENERS = ("and", "or", "but", "also", "then", "so", "what about", "how about", "what else",
                     "same for", "in that case")
# Words that point back at something named before.
PRONOUNS = frozenset({"it", "its", "it's", "itself", "they", "them", "their", "theirs", "themselves", "this",
                      "that", "these", "those", "he", "him", "his", "himself", "she", "her", "hers", "herself",
                      "then", "former", "latter", "same"})
SHORT_QUESTION_WORDS = 3  # "and 1:2:2?", "at which ratio?", "is it reliable?": too short to stand alone

_WORD = re.compile(r"[\w'’:.-]+")


def words(text: str) -> list[str]:
    """The question's words, lower case, without surrounding punctuation."""
    return [w.strip(".:-'’").replace("’", "'") for w in _WORD.findall(text.lower()) if w.strip(".:-'’")]


def looks_like_follow_up(question: str) -> bool:
    """Whether ``question`` reads as a continuation of the previous one: it opens with a
    connective ("and", "what about", ...), refers back with a pronoun ("it", "his", "there", ...),
    or is too short to say what it is about on its own."""
    ws = words(question)
    if not ws:
        return False
    opening = " ".join(ws[:3])
    if any(opening == o or opening.startswith(o + " ") for o in FOLLOW_UP_OPENERS):
        return True
    return len(ws) <= SHORT_QUESTION_WORDS or any(w in PRONOUNS for w in ws)


@dataclass(frozen=True)
class Turn:
    """One question of the conversation, what it was retrieved with, and its answer."""

    question: str
    search_query: str
    topic: tuple[str, ...]  # the questions the retrieval query was made of (this one last)
    answer: Answer | None = None
    follow_up: bool = False


@dataclass
class Conversation:
    """The turns so far and how the next retrieval query is made (no index, no models: the pure
    part, tested with plain strings)."""

    method: str = DEFAULT_METHOD
    max_questions: int = 3  # at most this many questions in one retrieval query (the topic's first kept)
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            from rag_cli.errors import InputError

            raise InputError(f"unknown follow-up method {self.method!r}", hint=f"use one of: {', '.join(METHODS)}")
        if self.max_questions < 1:
            raise ValueError("max_questions must be at least 1")

    @property
    def last(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def plan(self, question: str) -> Turn:
        """The turn ``question`` would be, before it is answered: its retrieval query and topic."""
        question = " ".join(question.split())
        last = self.last
        if last is None or self.method == "none":
            return Turn(question, question, (question,))
        if self.method == "previous":
            topic: tuple[str, ...] = (last.question, question)
            return Turn(question, " ".join(topic), topic, follow_up=True)
        if not looks_like_follow_up(question):
            return Turn(question, question, (question,))
        combined = (*last.topic, question)
        if len(combined) <= self.max_questions:
            topic = combined
        elif self.max_questions == 1:
            topic = (question,)
        else:  # the topic's first question says what it is about; then the latest follow-ups
            topic = (combined[0], *combined[len(combined) - self.max_questions + 1:])
        return Turn(question, " ".join(topic), topic, follow_up=True)

    def search_query(self, question: str) -> str:
        """What to retrieve ``question`` with, given the turns so far."""
        return self.plan(question).search_query

    def record(self, turn: Turn, answer: Answer | None) -> Turn:
        """Add an answered turn (a cancelled one is never recorded: the next question follows the
        last answered one)."""
        done = Turn(turn.question, turn.search_query, turn.topic, answer, turn.follow_up)
        self.turns.append(done)
        return done

    def reset(self) -> None:
        """Forget the conversation: the next question is retrieved alone."""
        self.turns.clear()


class ChatSession:
    """A conversation answered by one ``Index`` (one Asker, models loaded once for the session).

    ``where``, ``model``: as `rag ask`'s --where and --model, for every turn."""

    def __init__(self, index: Index, *, where: Sequence[str] = (), model: str | None = None,
                 method: str = DEFAULT_METHOD, use_cache: bool | None = None) -> None:
        self.index = index
        self.where = list(where)
        self.model = model
        self.use_cache = use_cache
        self.conversation = Conversation(method)

    def ask(self, question: str, *, on_text: Callable[[str], None] | None = None) -> tuple[Turn, Asked]:
        """Answer ``question`` as the next turn. An exception (Ctrl-C included) leaves the
        conversation as it was."""
        turn = self.conversation.plan(question)
        query = turn.search_query if turn.search_query != turn.question else None
        asked = self.index.ask(turn.question, where=self.where, model=self.model, use_cache=self.use_cache,
                               on_text=on_text, search_query=query)
        return self.conversation.record(turn, asked.answer), asked

    def open(self) -> None:
        """Open the index now (IndexNotFound, IndexMismatch before the first question) and start
        loading the model, so the first answer does not wait for all of it."""
        self.index.asker().preload(self.model)

    def sources(self) -> tuple[Citation, ...]:
        """The sources the last answer was given (cited or not); none before the first answer."""
        last = self.conversation.last
        return last.answer.citations if last is not None and last.answer is not None else ()

    @property
    def last_answer(self) -> Answer | None:
        last = self.conversation.last
        return last.answer if last is not None else None

    def reset(self) -> None:
        self.conversation.reset()
