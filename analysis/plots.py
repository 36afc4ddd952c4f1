"""Figures of a run (matplotlib, Agg): PNG bytes, one function per figure, sides drawn as overlays.

Plots draw binned aggregates of the tables (analysis/scan.py), never every row: time series are sums per bin
(1 s, or wider for long runs so that a figure has at most ~MAX_BINS bins); CDFs are drawn from CDF_POINTS
quantiles of the summary's own `Quantiles` (exact up to its limit, within 0.1 % beyond); per-edge bars from each
edge's `Quantiles`. A million-request run plots as fast as a 1-minute one once its tables are scanned.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.scan import SPEC_MAX_ROUNDS, Binned  # noqa: E402

if TYPE_CHECKING:
    from analysis.compare import Side

CDF_POINTS = 400
SIDE_STYLE = {  # name -> (colour, line style)
    "sim": ("#2563eb", "-"),
    "emu": ("#ea580c", "--"),
    "A": ("#2563eb", "-"),
    "B": ("#ea580c", "--"),
}
TARGET_COLOURS = ["#0f766e", "#7c3aed", "#b91c1c", "#ca8a04", "#0369a1", "#be185d", "#4d7c0f", "#57534e"]
DPI = 100

plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.labelsize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
        "legend.fontsize": 9,
        "figure.dpi": DPI,
    }
)

SidePair = tuple[str, "Side"]


def style(name: str, k: int = 0) -> tuple[str, str]:
    return SIDE_STYLE.get(name, (TARGET_COLOURS[k % len(TARGET_COLOURS)], "-"))


def run_duration(sides: list[SidePair]) -> float:
    d = [float(s.summary.get("duration_s") or 0.0) for _, s in sides]
    return max(d + [1.0])


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # tight_layout already fitted it
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: plt.Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#6b7280")


def binned(side: "Side") -> Binned:
    if side.scan.binned is None:
        raise ValueError(f"{side.name}: loaded without the figures' binned series (load it with figures=True)")
    return side.scan.binned


# ---- figures -------------------------------------------------------------------------------------------------


def latency_cdfs(sides: list[SidePair]) -> bytes:
    """CDF overlays of TTFT, TPOT and E2E (completed requests); dotted lines mark p50 / p90 / p99."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (col, title) in zip(axes, (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E latency"))):
        drawn = False
        lo, hi = np.inf, 0.0
        for k, (n, s) in enumerate(sides):
            x, y = s.scan.builder.lat[col].cdf(CDF_POINTS)
            if x.size == 0:
                continue
            c, ls = style(n, k)
            ax.plot(x, y, color=c, ls=ls, lw=1.8, label=n, drawstyle="steps-post")
            lo, hi = min(lo, float(x[x > 0].min()) if (x > 0).any() else lo), max(hi, float(x.max()))
            drawn = True
        if not drawn:
            _empty(ax)
        elif lo > 0 and hi / lo > 30:
            ax.set_xscale("log")
        for q in (0.5, 0.9, 0.99):
            ax.axhline(q, color="#9ca3af", lw=0.7, ls=":")
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylim(0, 1.01)
    axes[0].set_ylabel("fraction of requests")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)


def throughput_and_gamma(sides: list[SidePair]) -> bytes:
    """Over time: output tokens/s (tokens as they reach the edge), completed requests/s, mean γ of rounds sent."""
    fig, axes = plt.subplots(3, 1, figsize=(13, 7.2), sharex=True)
    for k, (n, s) in enumerate(sides):
        c, ls = style(n, k)
        b = binned(s)
        width, centres = b.bins.width, b.bins.centres
        axes[0].plot(centres, b.tokens / width, color=c, ls=ls, lw=1.4, label=n)
        axes[1].plot(centres, b.completed / width, color=c, ls=ls, lw=1.4, label=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            axes[2].plot(
                centres, np.where(b.spec_n > 0, b.spec_gamma / b.spec_n, np.nan), color=c, ls=ls, lw=1.4, label=n
            )
    bins = binned(sides[0][1]).bins
    axes[0].set_ylabel("output tokens / s")
    axes[0].set_title(f"Throughput and window over time ({bins.width:g} s bins)")
    axes[1].set_ylabel("completed req / s")
    axes[2].set_ylabel("mean γ")
    axes[2].set_ylim(0, max(1.0, axes[2].get_ylim()[1] * 1.05))  # γ from 0: a static window reads as flat
    axes[2].set_xlabel("time since run start (s)")
    axes[2].set_xlim(0, bins.n * bins.width)
    axes[0].legend(loc="upper right")
    fig.tight_layout()
    return _png(fig)


def per_edge_latency(sides: list[SidePair]) -> bytes:
    """Each edge's mean TTFT, TPOT and E2E (bars) with its p99 (marker), sides side by side."""
    names = sorted({e for _, s in sides for e, st in s.scan.edges.items() if st.completed}, key=_natural)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8 if len(names) <= 8 else 4.6))
    x = np.arange(len(names))
    bw = 0.8 / max(1, len(sides))
    for ax, (col, title) in zip(
        axes, (("ttft_ms", "TTFT per edge"), ("tpot_ms", "TPOT per edge"), ("e2e_ms", "E2E per edge"))
    ):
        if not names:
            _empty(ax)
        for k, (n, s) in enumerate(sides):
            c, _ls = style(n, k)
            qs = [s.scan.edges[e].lat[col] if e in s.scan.edges else None for e in names]
            mean = np.array([q.total / q.n if q is not None and q.n else np.nan for q in qs], dtype=np.float64)
            p99 = np.array([q.quantiles([0.99])[0] if q is not None else np.nan for q in qs], dtype=np.float64)
            off = (k - (len(sides) - 1) / 2) * bw
            ax.bar(x + off, mean, bw * 0.95, color=c, alpha=0.85 if k == 0 else 0.6, label=f"{n} mean")
            ax.plot(x + off, p99, ls="none", marker="_", ms=10, mew=2, color=c, label=f"{n} p99")
        ax.set_title(title)
        ax.set_ylabel("ms")
        ax.set_xticks(x, names, rotation=0 if len(names) <= 8 else 60, fontsize=9 if len(names) <= 16 else 7)
        ax.grid(axis="x", visible=False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0))
    return _png(fig)


MAX_TARGET_ROWS = 8


def targets_over_time(sides: list[SidePair]) -> bytes:
    """Each target's mean verify batch size and utilisation (busy fraction) per bin: one row per target."""
    targets = sorted({t for _, s in sides for t in binned(s).targets}, key=_natural)
    shown = targets[:MAX_TARGET_ROWS]
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 2, figsize=(13, 1.3 + 2.0 * rows if rows > 1 else 3.4), sharex=True, squeeze=False)
    for j, t in enumerate(shown):
        for k, (n, s) in enumerate(sides):
            c, ls = style(n, k)
            b = binned(s)
            tb = b.targets.get(t)
            if tb is None:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                axes[j, 0].plot(
                    b.bins.centres,
                    np.where(tb.verify_n > 0, tb.verify_size / tb.verify_n, np.nan),
                    color=c,
                    ls=ls,
                    lw=1.3,
                    label=n,
                )
            axes[j, 1].plot(b.bins.centres, np.clip(tb.busy / b.bins.width, 0, 1), color=c, ls=ls, lw=1.3, label=n)
        axes[j, 0].set_ylabel(f"{t}\nbatch (req)")
        axes[j, 1].set_ylabel("utilisation")
        axes[j, 0].set_ylim(bottom=0)
        axes[j, 1].set_ylim(0, 1.05)
    if not shown:
        _empty(axes[0, 0])
        _empty(axes[0, 1])
    bins = binned(sides[0][1]).bins
    more = f" (first {len(shown)} of {len(targets)} targets)" if len(targets) > len(shown) else ""
    axes[0, 0].set_title(f"Mean verify batch size ({bins.width:g} s bins){more}")
    axes[0, 1].set_title(f"Utilisation: busy fraction ({bins.width:g} s bins)")
    for ax in axes[-1]:
        ax.set_xlabel("time since run start (s)")
        ax.set_xlim(0, bins.n * bins.width)
    axes[0, 1].legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)


def speculation(sides: list[SidePair], min_rounds: int = 20) -> bytes:
    """Acceptance rate by round index within a request, and the distribution of draft tokens accepted per round."""
    max_rounds = SPEC_MAX_ROUNDS
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    drawn = False
    gmax = 1
    for k, (n, s) in enumerate(sides):
        c, ls = style(n, k)
        b = binned(s)
        total = b.accepted_hist.sum()
        if total == 0:
            continue
        drawn = True
        cnt, acc, gam = b.round_n, b.round_accepted, b.round_gamma
        keep = cnt[:max_rounds] >= min_rounds
        xs = np.arange(max_rounds)[keep]
        axes[0].plot(
            xs,
            (acc[:max_rounds] / np.maximum(gam[:max_rounds], 1))[keep],
            color=c,
            ls=ls,
            lw=1.5,
            marker=".",
            ms=3,
            label=n,
        )
        gmax = max(gmax, b.gamma_max)
        h = np.zeros(max(gmax + 1, b.accepted_hist.size))
        h[: b.accepted_hist.size] = b.accepted_hist / total
        off = (k - (len(sides) - 1) / 2) * (0.8 / len(sides))
        axes[1].bar(np.arange(h.size) + off, h, 0.8 / len(sides) * 0.95, color=c, alpha=0.8, label=n)
    if not drawn:
        _empty(axes[0], "no speculative rounds")
        _empty(axes[1], "no speculative rounds")
    axes[0].set_title(f"Acceptance rate by round index (rounds with ≥ {min_rounds} samples)")
    axes[0].set_xlabel("round index within the request")
    axes[0].set_ylabel("accepted / drafted")
    axes[0].set_ylim(0, 1.02)
    axes[1].set_title("Draft tokens accepted per round")
    axes[1].set_xlabel("accepted tokens")
    axes[1].set_ylabel("fraction of rounds")
    axes[1].set_xticks(range(gmax + 1))
    axes[1].grid(axis="x", visible=False)
    if drawn:
        axes[0].legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _natural(s: str) -> tuple:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


# name -> (figure function, title, caption)
FIGURES: dict[str, tuple[Callable[[list[SidePair]], bytes], str, str]] = {
    "latency_cdf": (
        latency_cdfs,
        "Latency distributions",
        "Empirical CDFs of completed requests. Dotted lines: p50, p90, p99.",
    ),
    "throughput_gamma": (
        throughput_and_gamma,
        "Throughput and window over time",
        "Output tokens counted when they reach the edge; requests when they complete; "
        "γ averaged over the rounds sent in each bin.",
    ),
    "edges": (per_edge_latency, "Per-edge latency", "Bars: mean over the edge's completed requests; markers: p99."),
    "targets": (
        targets_over_time,
        "Targets: batch size and utilisation",
        "Mean requests per verify batch (by batch start) and fraction of each bin the target was busy "
        "(prefill + verify).",
    ),
    "speculation": (
        speculation,
        "Speculation",
        "Acceptance by round index shows position effects (e.g. decaying acceptance); "
        "the histogram shows how many of the γ draft tokens each round kept.",
    ),
}


def render_all(sides: list[SidePair], only: list[str] | None = None) -> dict[str, bytes]:
    """All figures as PNG bytes, in report order (a figure whose function returns None does not apply)."""
    from analysis.timeline import schedule_timeline

    FIGURES.setdefault(
        "schedule",
        (
            schedule_timeline,
            "Schedule timeline",
            "Configured capacity (Mahimahi trace opportunities, or rate steps) and one-way delay "
            "of each scheduled link, against the per-round network RTT (median per bin: "
            "round trip minus the verify batch), output throughput and mean γ; red bands: "
            "a link down, yellow: a node down; vertical lines: changes as applied.",
        ),
    )
    out: dict[str, bytes] = {}
    for name, (fn, _title, _cap) in FIGURES.items():
        if only is None or name in only:
            img = fn(sides)
            if img is not None:
                out[name] = img
    return out


def describe(name: str) -> dict[str, Any]:
    _fn, title, caption = FIGURES[name]
    return {"title": title, "caption": caption}
