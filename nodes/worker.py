"""A compute worker thread for backends that really compute (the hf models): the node's message loop keeps
serving arrivals, results and heartbeats while a draft is being computed, as an edge device's serving
loop would; results come back through a pipe the loop selects on alongside its sockets.

    w = ComputeWorker("edge0")
    w.submit(tag, fn, *args)      # fn(*args) runs in the worker thread, one job at a time, in order
    ... select on w.fd ...
    for tag, result, error in w.done(): ...
    w.close()

Jobs run strictly one after another (one model, one set of torch threads): a node drafting for several
requests computes them in turn, which is what draft_slots: 1 describes.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from typing import Any, Callable


class ComputeWorker:
    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: deque[tuple[Any, Any, BaseException | None]] = deque()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.pending = 0
        self._thread = threading.Thread(target=self._run, name=f"compute-{name}", daemon=True)
        self._thread.start()

    @property
    def fd(self) -> int:
        """Readable when finished jobs wait in done()."""
        return self._r

    def submit(self, tag: Any, fn: Callable, *args: Any) -> None:
        self.pending += 1
        self._jobs.put((tag, fn, args))

    def done(self) -> list[tuple[Any, Any, BaseException | None]]:
        """Finished jobs (tag, result, exception or None), in completion order."""
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while self._done:
            out.append(self._done.popleft())
        self.pending -= len(out)
        return out

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            tag, fn, args = job
            try:
                res, err = fn(*args), None
            except BaseException as e:  # reported to the loop, which decides (a node error, never a silent hang)
                res, err = None, e
            self._done.append((tag, res, err))
            try:
                os.write(self._w, b"x")
            except OSError:
                return

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
