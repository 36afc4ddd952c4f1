"""Parallel AWC data generation (and evaluation) on Ray: one task per configuration.

Local by default (`ray.init(num_cpus=N)`: a private single-node cluster that stops with the process), a
running cluster with `address` ("auto", "ray://host:10001", ...). Tasks are pure functions of their
arguments ((family, seed) for data generation), so results are the same however many workers run them;
they are gathered in task order. Without Ray installed, or with workers = 0 and no address, the same
tasks run serially in this process (the fallback the unit tests use).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from testbed.awc.dataset import CANDIDATES, config_task


def parallel_map(fn: Callable[[Any], Any], items: list[Any], *, workers: int = 1, address: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """[fn(x) for x in items], on Ray when workers > 0 or an address is given, else serially."""
    if address is None and workers <= 0:
        return _serial(fn, items, progress)
    try:
        import ray
    except ImportError:
        if address is not None:
            raise
        return _serial(fn, items, progress)
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, logging_level="WARNING")
        else:
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}})
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, x) for x in items]
        index = {r: i for i, r in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                results[index[r]] = ray.get(r)
            if progress is not None:
                progress(len(refs) - len(pending), len(refs))
        return results
    finally:
        if started:
            ray.shutdown()


def _call(fn: Callable[[Any], Any], x: Any) -> Any:
    return fn(x)


def _serial(fn, items, progress) -> list[Any]:
    out = []
    for i, x in enumerate(items):
        out.append(fn(x))
        if progress is not None:
            progress(i + 1, len(items))
    return out


def _task(kw: dict[str, Any], fam_seed: tuple[str, int]) -> list[dict[str, Any]]:
    return config_task(fam_seed[0], fam_seed[1], **kw)


def generate(task_list: list[tuple[str, int]], *, workers: int = 1, address: str | None = None,
             n_branches: int = 2, per_branch: int = 4, max_requests: int = 200,
             candidates: tuple[int, ...] = CANDIDATES,
             progress: Callable[[int, int], None] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows of all (family, seed) tasks, in task order, and how they ran."""
    kw = {"n_branches": n_branches, "per_branch": per_branch, "max_requests": max_requests, "candidates": candidates}
    try:
        import ray  # noqa: F401
        have_ray = True
    except ImportError:
        have_ray = False
    how = (f"ray {address}" if address else f"ray local, {workers} cpus") if have_ray and (address or workers > 0) else "serial"
    results = parallel_map(functools.partial(_task, kw), task_list, workers=workers, address=address, progress=progress)
    return [row for rows in results if rows for row in rows], how
