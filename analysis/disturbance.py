"""Was this run disturbed? From the run directory alone (emu/summary.json, emu/links.json): how busy the host was,
how late the delay lines released packets and the nodes' timers fired, and whether the paths measured after the
run agree with those measured before it. A comparison of a disturbed emulation with the simulator measures the
disturbance as much as the simulator; the report says so, and `testbed run` records it in meta.json.

Thresholds (a warning each; "trusted" is False when any fires):
- host: more runnable tasks than cores on average during the run (`runnable_mean > cores`), and at least
  FOREIGN_RUNNABLE_MIN of them on average not the run's own (testbed/emu/hostload.py separates the run's node
  programs, delay lines and probes from the rest): node programs waited for a CPU that other jobs held. A run
  that fills the cores by itself (real models: a draft and a target computing on 2 cores) is what the run is,
  not a disturbance; records without the split (older runs) are judged on the total alone;
- delay line: its mean lateness, paid at every hop up and down, adds more than ROUND_SHARE (1 %) to the run's mean
  round (mean TPOT x tokens per round); counted from the run's start (the path verification's rate tests before
  it do not count). Without rounds: more than 1 % of packets released over 1 ms late, or a mean over 200 us;
- node timers: the drafts' and the targets' mean timer lateness (a draft's compute end, a batch's end) add more
  than ROUND_SHARE to the mean round. Without rounds: a node's p99 over 2 ms. Judged by what it does to the
  metrics, not by a tail: on the quiet 2-core machine node timers' p99 is 2-5 ms in most runs (their mean 0.13-0.42
  ms, 0.03-0.6 % of a round in the 30 random scenarios of generator seed 1), and a p99 threshold flagged 24 of 30;
- probes: a path's RTT residual after the run differs from the one before by more than the verification
  tolerance (testbed.spec.asbuilt.rtt_tolerance_ms: max(0.6 ms, 3 % of the RTT, twice the standard error of the
  difference of the two medians)): the network during the run was not the one verification saw.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from testbed.spec.asbuilt import median_se_ms, rtt_tolerance_ms

DELAYLINE_LATE_FRAC = 0.01
DELAYLINE_MEAN_US = 200.0
NODE_P99_US = 2000.0
ROUND_SHARE = 0.01  # lateness adding over 1 % to a round (a fifth of the 5 % tolerance on mean TPOT) distrusts a run
FOREIGN_RUNNABLE_MIN = 0.25  # runnable tasks on average that are not the run's own


def _round_ms(summary: dict[str, Any]) -> float | None:
    """The emulation's mean round (mean TPOT x tokens per round), the scale lateness is judged against."""
    tpot = (summary.get("tpot_ms") or {}).get("mean")
    tpr = summary.get("tokens_per_round")
    return tpot * tpr if tpot and tpr and tpot == tpot and tpr == tpr else None


def _read(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def assess(run: Path) -> dict[str, Any] | None:
    """The disturbance record of a run with emulated results; None when it has none."""
    emu = Path(run) / "emu"
    summary = _read(emu / "summary.json")
    if not summary:
        return None
    links = _read(emu / "links.json")
    warnings: list[str] = []
    host = (summary.get("emulator") or {}).get("host_load") or {}
    foreign = host.get("foreign_runnable_mean")
    if (
        host.get("runnable_mean") is not None
        and host["runnable_mean"] > host.get("cores", 1)
        and (foreign is None or foreign >= FOREIGN_RUNNABLE_MIN)
    ):
        split = (
            ""
            if foreign is None
            else f", {foreign:.1f} of them not the run's own, other jobs "
            f"{100 * (host.get('foreign_cpu_busy_frac') or 0):.0f} % of the CPU"
        )
        warnings.append(
            f"host busy: {host['runnable_mean']:.1f} runnable tasks on average on {host['cores']} cores "
            f"(CPU {100 * (host.get('cpu_busy_frac') or 0):.0f} % busy{split})"
        )
    dl = ((links.get("shaping_detail") or {}).get("delayline_stats")) or {}
    released = sum(int(s.get("released", 0)) for s in dl.values() if isinstance(s, dict))
    late_1ms = sum(int(s.get("late_over_1ms", 0)) for s in dl.values() if isinstance(s, dict))
    mean_us = (
        (
            sum(float(s.get("late_mean_us", 0)) * int(s.get("released", 0)) for s in dl.values() if isinstance(s, dict))
            / released
        )
        if released
        else None
    )
    delay_line = {
        "released": released,
        "late_over_1ms": late_1ms,
        "late_mean_us": mean_us,
        "late_max_us": max((float(s.get("late_max_us", 0)) for s in dl.values() if isinstance(s, dict)), default=None),
        "sched": sorted({s.get("sched") for s in dl.values() if isinstance(s, dict) and s.get("sched")}),
    }
    round_ms = _round_ms(summary)
    hops = [len(p.get("hops") or []) for p in links.get("paths", [])]
    per_round_us = 2 * (sum(hops) / len(hops) if hops else 1) * (mean_us or 0)  # up and down, a delay line per hop
    delay_line["per_round_us"] = per_round_us if released else None
    if not released:
        late = False
    elif round_ms:
        late = per_round_us / 1e3 > ROUND_SHARE * round_ms
    else:  # no rounds to judge by
        late = late_1ms / released > DELAYLINE_LATE_FRAC or (mean_us or 0) > DELAYLINE_MEAN_US
    if late:
        share = f", {100 * per_round_us / 1e3 / round_ms:.1f} % of a {round_ms:.0f} ms round" if round_ms else ""
        warnings.append(
            f"delay line late: {late_1ms} of {released} packets released over 1 ms late, mean lateness "
            f"{mean_us:.0f} us{share}"
        )
    nodes = summary.get("nodes") or {}
    timers = {n: i.get("timer_lateness") for n, i in nodes.items() if i.get("timer_lateness")}
    worst = max(((n, t.get("p99_us") or 0) for n, t in timers.items()), key=lambda x: x[1], default=None)
    means = {
        role: [t["mean_us"] for n, t in timers.items() if nodes[n].get("role") == role and t.get("mean_us") is not None]
        for role in ("draft", "target")
    }
    if round_ms and (means["draft"] or means["target"]):
        d, t = (sum(v) / len(v) if v else 0.0 for v in (means["draft"], means["target"]))
        if (d + t) / 1e3 > ROUND_SHARE * round_ms:
            warnings.append(
                f"node timers late: mean {d:.0f} us at drafts + {t:.0f} us at targets, "
                f"{100 * (d + t) / 1e3 / round_ms:.1f} % of a {round_ms:.0f} ms round"
                + (f" (p99 {worst[1] / 1e3:.1f} ms at {worst[0]})" if worst else "")
            )
    elif worst and worst[1] > NODE_P99_US:
        warnings.append(f"node timers late: p99 {worst[1] / 1e3:.1f} ms at {worst[0]}")
    probes = []
    after = {(p["src"], p["dst"]): p for p in (links.get("after") or {}).get("paths", [])}
    for p in links.get("paths", []):
        a = after.get((p["src"], p["dst"]))
        before_err, rtt = p.get("rtt_error_ms"), (p.get("configured") or {}).get("rtt_ms")
        if a is None or before_err is None or a.get("rtt_error_ms") is None or rtt is None:
            continue
        e = {
            "path": f"{p['src']}->{p['dst']}",
            "before_ms": before_err,
            "after_ms": a["rtt_error_ms"],
            "std_before_ms": (p.get("measured") or {}).get("rtt_std_ms"),
            "std_after_ms": a["measured"].get("rtt_std_ms"),
        }
        probes.append(e)
        se = math.hypot(
            median_se_ms(e["std_before_ms"], (p.get("measured") or {}).get("samples")),
            median_se_ms(e["std_after_ms"], a["measured"].get("samples")),
        )  # of the difference of the two medians
        if abs(e["after_ms"] - e["before_ms"]) > rtt_tolerance_ms(rtt, se):
            warnings.append(
                f"path {e['path']}: RTT residual {e['before_ms']:+.2f} ms before the run, {e['after_ms']:+.2f} ms after"
            )
    return {
        "trusted": not warnings,
        "warnings": warnings,
        "host_load": host,
        "delay_line": delay_line,
        "node_timers_worst_p99_us": worst[1] if worst else None,
        "node_timers_worst": worst[0] if worst else None,
        "probes": probes,
        "thresholds": {
            "runnable_mean": "> cores",
            "foreign_runnable_mean": f">= {FOREIGN_RUNNABLE_MIN}",
            "round_share": ROUND_SHARE,
            "delay_line": "2 x hops x mean lateness > round_share x mean round (without rounds: "
            f"> {DELAYLINE_LATE_FRAC:.0%} of packets over 1 ms late or a mean over {DELAYLINE_MEAN_US:.0f} us)",
            "node_timers": "mean lateness at drafts + at targets > round_share x mean round (without rounds: a "
            f"node's p99 over {NODE_P99_US:.0f} us)",
            "probe_residual_change_ms": "max(0.6, 3 % of RTT, 2 x the standard error of the change)",
        },
    }
