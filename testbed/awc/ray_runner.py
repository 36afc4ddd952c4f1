"""Parallel AWC data generation (and evaluation): one task per configuration, on testbed.runner's Runner —
a private local Ray cluster by default (`workers` CPUs, 127.0.0.1), a running cluster with `address`, or
serially in this process with workers = 0 and no address (what the unit tests use). Tasks are pure functions of
their arguments ((family, seed) for data generation), so results are the same however many workers run them;
they are gathered in task order. How they ran is returned, never guessed: there is no silent fallback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from testbed.awc.dataset import CANDIDATES, config_task
from testbed.runner import Runner, RunnerConfig, ordered


def parallel_map(
    fn: Callable[[Any], Any],
    items: list[Any],
    *,
    workers: int = 1,
    address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Any], str]:
    """([fn(x) for x in items], how they ran): on Ray when workers > 0 or an address is given, else serially."""
    with Runner(RunnerConfig(address=address, workers=workers)) as runner:
        return ordered(runner, fn, items, progress), runner.mode


def _task(kw: dict[str, Any], fam_seed: tuple[str, int]) -> list[dict[str, Any]]:
    return config_task(fam_seed[0], fam_seed[1], **kw)


def generate(
    task_list: list[tuple[str, int]],
    *,
    workers: int = 1,
    address: str | None = None,
    n_branches: int = 2,
    per_branch: int = 4,
    max_requests: int = 200,
    candidates: tuple[int, ...] = CANDIDATES,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Rows of all (family, seed) tasks, in task order, and how they ran (testbed.runner.Runner.mode)."""
    kw = {"n_branches": n_branches, "per_branch": per_branch, "max_requests": max_requests, "candidates": candidates}
    results, how = parallel_map(
        functools.partial(_task, kw), task_list, workers=workers, address=address, progress=progress
    )
    return [row for rows in results if rows for row in rows], how
