"""Run a generator ahead of its consumer in a background thread (bounded queue)."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int, name: str = "protstore-prefetch") -> Iterator[T]:
    """Yield ``items`` in order while a thread produces up to ``depth`` of them ahead.

    The thread starts at once (work begins before the first ``next``). The producer's
    exception is re-raised in the consumer at the point it happened. Closing the returned
    iterator early (``break``, an error in the consumer), or dropping it, stops the producer.
    ``depth <= 0`` iterates in the caller's thread.
    """
    if depth <= 0:
        return iter(items)
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    consumer = _consume(q, stop, thread)
    weakref.finalize(consumer, stop.set)  # dropped without being run to the end
    return consumer


def _consume(q: queue.Queue, stop: threading.Event, thread: threading.Thread) -> Iterator:
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
