"""bench/schedule_fidelity.py's batch_view: verify batches per batch and per round, and those started idle."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

_spec = importlib.util.spec_from_file_location(
    "schedule_fidelity", Path(__file__).resolve().parent.parent / "bench" / "schedule_fidelity.py"
)
schedule_fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(schedule_fidelity)


def test_batch_view_tells_idle_starts_from_busy_ones():
    # t0: prefill 0.00-0.05; verify A (1 job, arrived 0.06: idle) 0.0602-0.07; verify B (3 jobs, the first arrived
    # 0.065 while A ran: busy) 0.07-0.09; verify C on another target (2 jobs, arrived 0.08 / 0.0801: idle) at 0.0805
    batches = pd.DataFrame(
        {
            "target": ["t0", "t0", "t0", "t1"],
            "kind": ["prefill", "verify", "verify", "verify"],
            "start_s": [0.0, 0.0602, 0.07, 0.0805],
            "end_s": [0.05, 0.07, 0.09, 0.1],
            "size": [1, 1, 3, 2],
        }
    )
    rounds = pd.DataFrame(
        {
            "target": ["t0", "t0", "t0", "t0", "t1", "t1"],
            "batch_start_s": [0.0602, 0.07, 0.07, 0.07, 0.0805, 0.0805],
            "target_recv_s": [0.06, 0.065, 0.066, 0.069, 0.08, 0.0801],
            "batch_size": [1, 3, 3, 3, 2, 2],
        }
    )
    v = schedule_fidelity.batch_view(batches, rounds)
    assert v["batches"] == 3
    assert v["mean_size"] == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    assert v["round_size"] == pytest.approx(14 / 6)  # each round counts its batch's size
    assert v["idle_batches"] == 2  # A and C; B's first job came while A ran
    assert v["idle_size"] == pytest.approx(1.5)
    assert v["idle_start_ms"] == pytest.approx(0.35)  # median of 0.2 and 0.5 ms
