"""Shared fixtures: small scenarios built from dicts, native traces written to tmp_path."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.spec import Scenario, TopologySpec, resolve

ROOT = Path(__file__).resolve().parent.parent


def write_native_trace(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    """rows: (t seconds, prompt_tokens, output_tokens)."""
    path.write_text("".join(json.dumps({"t": t, "prompt_tokens": p, "output_tokens": o}) + "\n" for t, p, o in rows))
    return path


def one_edge_spec(
    trace: Path,
    *,
    delay_ms: float = 10.0,
    bw_mbps: float | None = None,
    t_draft_ms: float = 10.0,
    t_verify_ms: float = 20.0,
    t_prefill_ms: float = 30.0,
    alpha: float = 0.8,
    window: str = "static:4",
    mode: str = "distributed",
    **extra: Any,
) -> dict[str, Any]:
    """One draft, one target, one link; constant compute: the analytic case."""
    d: dict[str, Any] = {
        "name": "analytic",
        "seed": 7,
        "nodes": [
            {"name": "edge0", "role": "draft", "profile": "edgec"},
            {"name": "cloud0", "role": "target", "profile": "cloudc"},
        ],
        "links": [{"a": "edge0", "b": "cloud0", "delay_ms": delay_ms, "bw_mbps": bw_mbps}],
        "workload": {"trace": str(trace), "format": "native", "duration_s": None},
        "policy": {"window": window, "routing": "round_robin"},
        "models": {"acceptance": {"kind": "iid", "alpha": alpha}},
        "profiles": {
            "edgec": {"draft_step": {"base_ms": t_draft_ms}},
            "cloudc": {
                "prefill": {"base_ms": t_prefill_ms},
                "verify": {"base_ms": t_verify_ms},
                "draft_step": {"base_ms": 1.0},
            },
        },
        "run": {"mode": mode},
    }
    for k, v in extra.items():
        d[k] = v
    return d


def wait_for(pred, timeout: float, what: str):
    """Poll `pred` until it returns something truthy (returned); AssertionError naming `what` after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read_json(p: Path) -> dict:
    """A JSON file a node is writing: {} while it is missing or half-written."""
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def scenario(d: dict[str, Any]) -> Scenario:
    return resolve(TopologySpec.model_validate(d), "<test>")


@pytest.fixture
def root() -> Path:
    return ROOT
