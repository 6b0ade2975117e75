"""The queue between the indexer's reader thread (load and chunk) and its writer (embed and store)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    """The reader's queue to the writer, bounded by the chunks it holds (so memory stays flat
    whatever the corpus) and by its length. A part bigger than the bound passes when the queue
    is empty. Closing it tells the reader the writer has stopped."""

    def __init__(self, max_chunks: int, max_parts: int) -> None:
        self._cond = threading.Condition()
        self._items: deque[tuple[T, int]] = deque()
        self._chunks = 0
        self._max_chunks, self._max_parts = max_chunks, max_parts
        self._closed = False

    def put(self, item: T, chunks: int = 0) -> bool:
        """Queue ``item`` once there is room; False when the writer has gone."""
        with self._cond:
            while not self._closed and self._items and (
                    self._chunks + chunks > self._max_chunks or len(self._items) >= self._max_parts):
                self._cond.wait()
            if self._closed:
                return False
            self._items.append((item, chunks))
            self._chunks += chunks
            self._cond.notify_all()
            return True

    def get(self) -> T:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item, chunks = self._items.popleft()
            self._chunks -= chunks
            self._cond.notify_all()
            return item

    def ready(self) -> bool:
        """Something is waiting to be taken."""
        return bool(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
