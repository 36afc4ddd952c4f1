"""The HTML summary of a sweep (DIR/summary.html, DIR/plots/sweep-*.png), from DIR/trials.parquet and DIR/sweep.json
alone. Its plots follow the swept dimensions:

- each swept dimension on the x axis, every headline metric against it: mean over the trials of each x (seeds and
  the other dimensions) with the 95 % CI; with a second swept dimension of few values, one line per value of it;
- each pair of the first three swept dimensions: a heatmap of the mean of each headline metric;
- no swept dimension (replicates only): a table of means and CIs.

Continuous values (random search) are grouped into quantile bins. Failed trials are listed with their error.

    python -m analysis.sweep_report DIR
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis.report import CSS, esc, fmt
from testbed.awc.stats import ci95
from testbed.files import write_text

HEADLINE = ("output_token_throughput_tps", "goodput_rps", "ttft_ms.mean", "tpot_ms.mean", "e2e_ms.p99")
ERRORS = ("ttft_ms.mean", "tpot_ms.mean", "output_token_throughput_tps")
MAX_GROUPS = 8  # values of a dimension shown as they are; more (numeric) are binned
MAX_LINES = 6  # a second dimension with at most this many values gets one line per value


def headline_metrics(df: pd.DataFrame) -> list[str]:
    cols = [f"{side}.{m}" for side in ("emu", "sim") for m in HEADLINE if f"{side}.{m}" in df.columns]
    cols += [f"err.{m}" for m in ERRORS if f"err.{m}" in df.columns]
    return [c for c in cols if df[c].notna().any()]


def grouped(values: pd.Series) -> pd.Series:
    """The dimension's values as plot categories: as they are when few, quantile bins when many numeric."""
    uniq = values.dropna().unique()
    if len(uniq) <= MAX_GROUPS or not pd.api.types.is_numeric_dtype(values):
        return values
    bins = pd.qcut(values, q=min(MAX_GROUPS, 6), duplicates="drop")
    return bins.map(lambda iv: float(round(iv.mid, 6))).astype(float)


def order(values) -> list[Any]:
    vals = list(dict.fromkeys(v for v in values if v is not None and not pd.isna(v)))
    try:
        return sorted(vals)
    except TypeError:
        return vals


def _label(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def line_plot(df: pd.DataFrame, x: str, metrics: list[str], by: str | None) -> bytes:
    import matplotlib.pyplot as plt

    n = len(metrics)
    ncol = min(3, n)
    fig, axes = plt.subplots(
        (n + ncol - 1) // ncol, ncol, figsize=(4.2 * ncol, 3.2 * ((n + ncol - 1) // ncol)), squeeze=False
    )
    xs = order(df[x])
    numeric = all(isinstance(v, (int, float)) for v in xs)
    pos = {v: (v if numeric else i) for i, v in enumerate(xs)}
    series = [(None, df)] if by is None else [(b, df[df[by] == b]) for b in order(df[by])]
    for ax, m in zip(axes.flat, metrics):
        for k, (b, sub) in enumerate(series):
            g = sub.groupby(x)[m]
            pts = [(pos[v], float(np.mean(s.dropna())), ci95(s.dropna())) for v, s in g if v in pos and s.notna().any()]
            if not pts:
                continue
            pts.sort()
            px, py, pe = (np.array(a) for a in zip(*pts))
            colour, _ = plots.style("", k)
            ax.errorbar(
                px,
                py,
                yerr=np.nan_to_num(pe),
                marker="o",
                capsize=3,
                color=colour,
                label=None if b is None else f"{by}={_label(b)}",
            )
        ax.set_title(m)
        ax.set_xlabel(x)
        if not numeric:
            ax.set_xticks(range(len(xs)), [_label(v) for v in xs], rotation=30 if len(xs) > 4 else 0)
        if by is not None:
            ax.legend()
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return plots._png(fig)


def heatmap(df: pd.DataFrame, x: str, y: str, metrics: list[str]) -> bytes:
    import matplotlib.pyplot as plt

    n = len(metrics)
    ncol = min(3, n)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.6 * nrow), squeeze=False)
    xs, ys = order(df[x]), order(df[y])
    for ax, m in zip(axes.flat, metrics):
        grid = np.full((len(ys), len(xs)), np.nan)
        for (vx, vy), s in df.groupby([x, y])[m]:
            if vx in xs and vy in ys and s.notna().any():
                grid[ys.index(vy), xs.index(vx)] = float(np.mean(s.dropna()))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.3g}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if grid[i, j] < np.nanmean(grid) else "black",
                    )
        ax.set_xticks(range(len(xs)), [_label(v) for v in xs], rotation=30 if len(xs) > 4 else 0)
        ax.set_yticks(range(len(ys)), [_label(v) for v in ys])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(m)
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return plots._png(fig)


def figures(df: pd.DataFrame, dims: list[str], metrics: list[str]) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, png)."""
    ok = df[df["status"] == "ok"].copy()
    dims = [d for d in dims if d in ok.columns and ok[d].nunique() > 1]
    if ok.empty or not dims or not metrics:
        return {}
    for d in dims:
        ok[d] = grouped(ok[d])
    out: dict[str, tuple[str, bytes]] = {}
    for i, d in enumerate(dims):
        others = [o for o in dims if o != d and ok[o].nunique() <= MAX_LINES]
        by = others[0] if others else None
        cap = (
            f"Mean over the trials of each value of {d} (seeds"
            + (", other dimensions" if len(dims) > 1 + (by is not None) else "")
            + ") with the 95 % CI"
            + (f"; one line per value of {by}" if by else "")
            + "."
        )
        out[f"sweep-line-{i}"] = (cap, line_plot(ok, d, metrics, by))
    pairs = [(a, b) for k, a in enumerate(dims[:3]) for b in dims[k + 1 : 3]]
    for k, (a, b) in enumerate(pairs):
        out[f"sweep-heat-{k}"] = (
            f"Mean of each metric over seeds (and other dimensions) for each ({a}, {b}).",
            heatmap(ok, a, b, metrics),
        )
    return out


def replicate_table(df: pd.DataFrame, metrics: list[str], dims: list[str]) -> str:
    ok = df[df["status"] == "ok"]
    keys = [d for d in dims if d in ok.columns]
    groups = ok.groupby(keys, dropna=False) if keys else [((), ok)]
    head = "".join(f"<th>{esc(c)}</th>" for c in [*keys, "trials", *metrics])
    rows = []
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"<td>{esc(_label(v))}</td>" for v in key] + [f"<td>{len(sub)}</td>"]
        for m in metrics:
            s = sub[m].dropna()
            cells.append(
                f"<td>{fmt(float(s.mean())) if len(s) else '–'}"
                + (f" ± {fmt(ci95(s))}" if len(s) > 1 else "")
                + "</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table id='configurations'><tr>{head}</tr>{''.join(rows)}</table>"


def failed_table(df: pd.DataFrame, dims: list[str]) -> str:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return "<p>No failed trials.</p>"
    cols = [c for c in ["trial", "status", *dims, "seed", "error"] if c in bad.columns]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(_label(r[c]) if r[c] is not None else '')}</td>" for c in cols) + "</tr>"
        for _, r in bad.iterrows()
    )
    return f"<table id='failed'><tr>{head}</tr>{rows}</table>"


def build(out: Path) -> Path:
    out = Path(out)
    df = pd.read_parquet(out / "trials.parquet")
    meta = json.loads((out / "sweep.json").read_text())
    dims = [d for d in meta.get("dims", []) if d in df.columns]
    metrics = headline_metrics(df)
    figs = figures(df, dims, metrics)
    (out / "plots").mkdir(exist_ok=True)
    parts = []
    for name, (cap, png) in figs.items():
        (out / "plots" / f"{name}.png").write_bytes(png)
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure id='fig-{name}'><img alt='{esc(cap)}' src='{uri}'><figcaption>{esc(cap)} "
            f"(also <code>plots/{name}.png</code>)</figcaption></figure>"
        )
    counts = df["status"].value_counts().to_dict()
    total = len(meta.get("trials", []))
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {esc(meta['name'])}</title>"
        f"<style>{CSS}</style></head><body><h1>Sweep {esc(meta['name'])}</h1>"
        f"<p class='sub'>{esc(meta.get('source'))}: {esc(meta.get('search'))} search, {total} trials "
        f"({len(df)} finished: " + ", ".join(f"{v} {esc(k)}" for k, v in counts.items()) + f"); ran on "
        f"{esc(meta.get('runner'))}. Swept: {esc(', '.join(dims) or 'nothing (replicates only)')}. "
        "Table: <code>trials.parquet</code> (parameters × metrics × fidelity errors <code>err.*</code>).</p>"
        + ("<h2 id='plots'>Plots</h2>" + "".join(parts) if parts else "")
        + "<h2 id='configs'>Configurations (mean ± 95 % CI over seeds)</h2>"
        + replicate_table(df, metrics, dims)
        + "<h2 id='failures'>Failed trials</h2>"
        + failed_table(df, dims)
        + f"<footer>generated {time.strftime('%Y-%m-%d %H:%M:%S')} by analysis/sweep_report.py</footer></body></html>"
    )
    p = out / "summary.html"
    write_text(p, html)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write DIR/summary.html of a sweep directory")
    ap.add_argument("dir", type=Path)
    print(build(ap.parse_args(argv).dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
