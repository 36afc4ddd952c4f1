"""nodes.worker.ComputeWorker: jobs run in order on one thread, the fd wakes a select loop, errors come back."""

from __future__ import annotations

import select
import threading

from nodes.worker import ComputeWorker


def test_jobs_run_in_order_and_wake_the_loop():
    w = ComputeWorker("t")
    gate = threading.Event()
    seen = []
    try:
        w.submit("a", lambda: (gate.wait(5), seen.append("a"), 1)[-1])
        w.submit("b", lambda x: seen.append("b") or x * 2, 21)
        assert w.pending == 2
        r, _, _ = select.select([w.fd], [], [], 0.05)
        assert not r and w.done() == []  # nothing finished while the first job is held
        gate.set()
        got = []
        while len(got) < 2:
            r, _, _ = select.select([w.fd], [], [], 5)
            assert r, "the worker never signalled"
            got += w.done()
        assert [(t, res, err) for t, res, err in got] == [("a", 1, None), ("b", 42, None)]
        assert seen == ["a", "b"] and w.pending == 0
    finally:
        w.close()


def test_errors_are_returned_not_lost():
    w = ComputeWorker("t")
    try:
        w.submit("x", lambda: 1 / 0)
        select.select([w.fd], [], [], 5)
        ((tag, res, err),) = w.done()
        assert tag == "x" and res is None and isinstance(err, ZeroDivisionError)
    finally:
        w.close()
