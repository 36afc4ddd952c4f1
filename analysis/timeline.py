"""The schedule's timeline figure: what was configured on each scheduled link (capacity from the trace or the
rate steps, one-way delay) against what the run saw (per-round network RTT, output throughput, mean γ), with the
applied changes marked; emulated and simulated overlaid. Reads the run's spec.yaml (the resolved schedule) and
each side's events.parquet; returns None for a run without a schedule.

1 s bins for runs up to TIMELINE_1S_MAX_S, the report's bins (at most MAX_BINS) beyond. Each side's rounds are
read in one streamed pass (analysis.scan); the per-bin median RTT is a `Quantiles` per bin, exact up to
RTT_EXACT_PER_BIN rounds in a bin and within 0.1 % beyond (so memory stays bounded by the number of bins)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.plots import _png, plt, run_duration, style
from analysis.scan import Bins, open_table
from testbed.errors import InputError
from testbed.metrics import Quantiles
from testbed.tables import record_batches
from traces.nettrace import OPPORTUNITY_BYTES

if TYPE_CHECKING:
    from analysis.plots import SidePair

TIMELINE_1S_MAX_S = 3600.0
RTT_EXACT_PER_BIN = 2048
ROUND_COLUMNS = ["send_s", "recv_s", "batch_start_s", "batch_end_s", "gamma", "gained"]

EVENT_COLOURS = {
    "link_down": "#b91c1c",
    "link_up": "#15803d",
    "crash": "#7c2d12",
    "restart": "#0f766e",
    "link_params": "#6b7280",
}


def _scenario(sides: list["SidePair"]):
    from testbed.spec import load_scenario

    for _, s in sides:
        spec = Path(s.path).parent / "spec.yaml"
        if spec.is_file():
            try:
                return load_scenario(spec)
            except InputError:
                return None
    return None


def schedule_timeline(sides: list["SidePair"]) -> bytes | None:
    events = {
        n: pd.read_parquet(Path(s.path) / "events.parquet")
        for n, s in sides
        if (Path(s.path) / "events.parquet").is_file()
    }
    if not events:
        return None
    sc = _scenario(sides)
    dur = run_duration(sides)
    bins = Bins.for_duration(dur, 1.0 if dur <= TIMELINE_1S_MAX_S else None)
    width, nbins, centres = bins.width, bins.n, bins.centres
    fig, axes = plt.subplots(5, 1, figsize=(13, 11), sharex=True)
    cap_ax, delay_ax, rtt_ax, tok_ax, g_ax = axes
    if sc is not None:
        sched = sc.schedule
        for k, ((li, fwd), tr) in enumerate(sorted(sched.traces.items())):
            l = sc.links[li]
            ops = tr.opportunities(0, int(nbins * width * 1e3))
            mbps = bins.count(ops / 1e3) * OPPORTUNITY_BYTES * 8 / width / 1e6
            name = f"{l.a}->{l.b}" if fwd else f"{l.b}->{l.a}"
            cap_ax.plot(centres, mbps, lw=1.0, color=style("", k)[0], label=f"{name} (trace)")
        for k, (li, steps) in enumerate(sorted(sched.steps.items())):
            l = sc.links[li]
            ts = [t for t, _ in steps] + [nbins * width]
            delay_ax.step(
                ts,
                [st.delay_ms for _, st in steps] + [steps[-1][1].delay_ms],
                where="post",
                color=style("", k + 3)[0],
                label=f"{l.a}-{l.b}",
            )
            if any(st.bw_mbps for _, st in steps):
                cap_ax.step(
                    ts,
                    [st.bw_mbps or np.nan for _, st in steps] + [steps[-1][1].bw_mbps or np.nan],
                    where="post",
                    color=style("", k + 3)[0],
                    label=f"{l.a}-{l.b} (rate)",
                )
        for li, ivs in sched.down.items():
            for a, b in ivs:
                for ax in axes:
                    ax.axvspan(a, min(b, nbins * width), color="#fecaca", alpha=0.5, lw=0)
        for node, ivs in sched.crashed.items():
            for a, b in ivs:
                for ax in axes:
                    ax.axvspan(a, min(b, nbins * width), color="#fde68a", alpha=0.5, lw=0)
    for k, (n, s) in enumerate(sides):
        c, ls = style(n, k)
        med, tok, g = _round_series(Path(s.path), bins)
        rtt_ax.plot(centres, med, color=c, ls=ls, lw=1.3, label=n)
        tok_ax.plot(centres, tok / width, color=c, ls=ls, lw=1.3, label=n)
        g_ax.plot(centres, g, color=c, ls=ls, lw=1.3, label=n)
    for n, ev in events.items():  # applied changes as ticks on the RTT panel, per side
        k = [m for m, _ in sides].index(n)
        for _, e in ev[ev.kind.isin(list(EVENT_COLOURS))].iterrows():
            rtt_ax.axvline(e.applied_s, color=EVENT_COLOURS[e.kind], lw=0.8, ls=style(n, k)[1], alpha=0.7)
    cap_ax.set_ylabel("configured\ncapacity (Mbit/s)")
    cap_ax.set_title(
        f"Schedule: configured links vs what the rounds saw ({width:g} s bins; red: link down, "
        "yellow: node down; lines: applied changes)"
    )
    delay_ax.set_ylabel("configured one-way\ndelay (ms)")
    rtt_ax.set_ylabel("round network\nRTT p50 (ms)")
    rtt_ax.set_yscale("log")
    tok_ax.set_ylabel("output tokens / s")
    g_ax.set_ylabel("mean γ")
    g_ax.set_xlabel("time since run start (s)")
    g_ax.set_xlim(0, nbins * width)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", ncol=4)
    fig.tight_layout()
    return _png(fig)


def _round_series(d: Path, bins: Bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: the median network RTT of the rounds sent (round trip minus the verify batch, ms), the output
    tokens reaching the edge, the mean γ of the speculative rounds sent; one streamed pass over the rounds."""
    rtt: dict[int, Quantiles] = {}
    tok = np.zeros(bins.n)
    spec_n, spec_g = np.zeros(bins.n), np.zeros(bins.n)
    for rb in record_batches(open_table(d, "rounds"), ROUND_COLUMNS):
        a = {n: rb.column(i).to_numpy() for i, n in enumerate(rb.schema.names)}
        net = (a["recv_s"] - a["send_s"] - (a["batch_end_s"] - a["batch_start_s"])) * 1e3
        idx, ok = bins.index(a["send_s"])
        order = np.argsort(idx, kind="stable")
        keys, starts = np.unique(idx[order], return_index=True)
        sent = net if ok is None else net[ok]  # rounds with a send time
        for key, part in zip(keys.tolist(), np.split(sent[order], starts[1:])):
            rtt.setdefault(key, Quantiles(RTT_EXACT_PER_BIN)).add(part)
        tok += bins.count(a["recv_s"], a["gained"])
        n, g = bins.counts(a["send_s"], [a["gamma"] > 0, a["gamma"]])
        spec_n += n
        spec_g += g
    med = np.full(bins.n, np.nan)
    for key, q in rtt.items():
        med[key] = q.quantiles([0.5])[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return med, tok, np.where(spec_n > 0, spec_g / spec_n, np.nan)
