import gc
import threading
import time

import pytest

from protstore.prefetch import prefetch


def _producer_threads():
    return [t for t in threading.enumerate() if t.name == "test-prefetch" and t.is_alive()]


def _wait_gone(timeout=3.0):
    end = time.monotonic() + timeout
    while _producer_threads() and time.monotonic() < end:
        time.sleep(0.02)
    return not _producer_threads()


def test_yields_in_order_and_starts_at_once():
    started = threading.Event()

    def items():
        started.set()
        yield from range(100)

    it = prefetch(items(), depth=3, name="test-prefetch")
    assert started.wait(2)  # the producer runs before the first next()
    assert list(it) == list(range(100))
    assert _wait_gone()


def test_reraises_the_producers_error_where_it_happened():
    def items():
        yield 1
        raise ValueError("bad block")

    it = prefetch(items(), depth=2, name="test-prefetch")
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad block"):
        next(it)
    assert _wait_gone()


@pytest.mark.parametrize("started", [True, False])
def test_closing_or_dropping_stops_the_producer(started):
    produced = []

    def items():
        for i in range(10**6):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=2, name="test-prefetch")
    if started:
        next(it)
        it.close()
    else:
        del it
        gc.collect()
    assert _wait_gone()
    assert len(produced) < 10  # it stopped instead of running to the end


def test_depth_zero_runs_in_the_callers_thread():
    seen = []

    def items():
        seen.append(threading.current_thread())
        yield 1

    assert list(prefetch(items(), depth=0)) == [1] and seen == [threading.current_thread()]
