"""The AWC emulation validation report: from DIR/result.json (written by `bench/awc_emu_check.py`) the
per-scenario validation table — each policy's gain over static gamma = 4, simulated and emulated on the same
specs, 95 % CIs over seeds, the difference in points and pass / fail against the tolerance (5 points) — as
text, DIR/validation.json, DIR/report.html (the style of `analysis.report`) and DIR/plots/awc_emu_gains.png.

    python -m analysis.awc_report DIR        # DIR holds result.json; rewrites the table and the report

Gains are paired per seed: gain_s = 100 (x_policy,s - x_static4,s) / x_static4,s for each executor, and the
difference of a seed is emu gain_s - sim gain_s; the mean difference is what is judged.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from analysis import plots
from analysis.report import CSS, esc, fmt
from testbed.awc.stats import ci95, rel_pct
from testbed.rundir import write_json

BASELINE = "static:4"
METRIC = "output_token_throughput_tps"  # judged; goodput is reported alongside
TOLERANCE_POINTS = 5.0
METRIC_LABELS = {"output_token_throughput_tps": "throughput", "goodput_rps": "goodput", "tpot_ms": "mean TPOT"}


def load(path: Path) -> dict[str, Any]:
    p = Path(path)
    return json.loads((p / "result.json" if p.is_dir() else p).read_text())


def _values(runs: list[dict], executor: str, metric: str) -> dict[tuple[str, str, int], float]:
    return {
        (r["cell"], r["policy"], r["seed"]): float(r[metric])
        for r in runs
        if r.get("executor") == executor and r.get("error") is None and r.get(metric) is not None
    }


def validation(
    runs: list[dict], metric: str = METRIC, baseline: str = BASELINE, tolerance: float = TOLERANCE_POINTS
) -> list[dict[str, Any]]:
    """One row per (scenario, policy other than the baseline): sim and emu gain over the baseline (mean and
    95 % CI over the seeds where both executors completed the policy and the baseline), their difference in
    points, and pass (|mean difference| <= tolerance; None when no seed is complete)."""
    sim, emu = _values(runs, "sim", metric), _values(runs, "emu", metric)
    cells = list(dict.fromkeys(r["cell"] for r in runs))
    policies = list(dict.fromkeys(r["policy"] for r in runs if r["policy"] != baseline))
    info = {r["cell"]: r for r in runs}
    out = []
    for c in cells:
        for p in policies:
            seeds = sorted({s for (cc, pp, s) in sim if cc == c and pp == p})
            seeds = [s for s in seeds if all((c, q, s) in d for q in (p, baseline) for d in (sim, emu))]
            g_sim = rel_pct([sim[c, p, s] for s in seeds], [sim[c, baseline, s] for s in seeds])
            g_emu = rel_pct([emu[c, p, s] for s in seeds], [emu[c, baseline, s] for s in seeds])
            diff = g_emu - g_sim
            ok = None if not seeds else bool(abs(float(diff.mean())) <= tolerance)
            nan = float("nan")
            out.append(
                {
                    "scenario": c,
                    "load": info[c].get("load"),
                    "draft": info[c].get("draft"),
                    "rtt_ms": info[c].get("rtt_ms"),
                    "alpha": info[c].get("alpha"),
                    "policy": p,
                    "metric": metric,
                    "seeds": seeds,
                    "sim_gains": g_sim.tolist(),
                    "emu_gains": g_emu.tolist(),
                    "sim_gain_pct": float(g_sim.mean()) if seeds else nan,
                    "sim_gain_ci": ci95(g_sim),
                    "emu_gain_pct": float(g_emu.mean()) if seeds else nan,
                    "emu_gain_ci": ci95(g_emu),
                    "diff_points": float(diff.mean()) if seeds else nan,
                    "diff_ci": ci95(diff),
                    "tolerance_points": tolerance,
                    "pass": ok,
                }
            )
    return out


def verdict(rows: list[dict]) -> dict[str, Any]:
    judged = [r for r in rows if r["pass"] is not None]
    return {
        "judged": len(judged),
        "passed": sum(r["pass"] for r in judged),
        "failed": [f"{r['scenario']} {r['policy']}" for r in judged if not r["pass"]],
        "max_abs_diff": max((abs(r["diff_points"]) for r in judged), default=float("nan")),
    }


def _pm(v: float, ci: float) -> str:
    if v != v:  # nan
        return "–"
    return f"{v:+.1f}" + ("" if ci != ci else f" ± {ci:.1f}")


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no runs"
    m = METRIC_LABELS.get(rows[0]["metric"], rows[0]["metric"])
    lines = [
        f"{m} gain over {BASELINE} (%), mean ± 95% CI over seeds; diff = emulated - simulated (points), "
        f"pass: |diff| <= {rows[0]['tolerance_points']:g}",
        f"{'scenario':<30}{'policy':<10}{'seeds':>6}{'sim gain':>16}{'emu gain':>16}{'diff':>16}  verdict",
    ]
    for r in rows:
        v = "–" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        lines.append(
            f"{r['scenario']:<30}{r['policy']:<10}{len(r['seeds']):>6}{_pm(r['sim_gain_pct'], r['sim_gain_ci']):>16}"
            f"{_pm(r['emu_gain_pct'], r['emu_gain_ci']):>16}{_pm(r['diff_points'], r['diff_ci']):>16}  {v}"
        )
    vd = verdict(rows)
    lines.append(
        f"{vd['passed']} of {vd['judged']} within {rows[0]['tolerance_points']:g} points; "
        f"largest |diff| {vd['max_abs_diff']:.1f} points"
        + (f"; outside: {', '.join(vd['failed'])}" if vd["failed"] else "")
    )
    return "\n".join(lines)


# ---- figure --------------------------------------------------------------------------------------------------

POLICY_MARKERS = {"awc": "o", "static:2": "v", "static:8": "^", "static:6": "D", "hf": "s", "specdec": "P"}


def gains_scatter(rows: list[dict]) -> bytes:
    """Emulated vs simulated gain per (scenario, policy), mean over seeds (large marker) and each seed (small);
    y = x and the ±tolerance band; vertical bar: 95 % CI of the paired difference emu - sim (what is judged).
    The gains' own CIs over seeds are wide (workloads differ by seed) but sim and emu move together."""
    fig, ax = plots.plt.subplots(figsize=(7.5, 6.2))
    pts = [r for r in rows if r["pass"] is not None]
    scen = list(dict.fromkeys(r["scenario"] for r in rows))
    vals = [v for r in pts for v in (*r["sim_gains"], *r["emu_gains"])]
    lo, hi = (min(vals + [-1.0]), max(vals + [1.0])) if vals else (-10.0, 10.0)
    pad = 0.08 * (hi - lo) + 1.0
    lo, hi = lo - pad, hi + pad
    tol = rows[0]["tolerance_points"] if rows else TOLERANCE_POINTS
    xs = np.array([lo, hi])
    ax.fill_between(xs, xs - tol, xs + tol, color="#16a34a", alpha=0.12, lw=0, label=f"±{tol:g} points")
    ax.plot(xs, xs, color="#6b7280", lw=1, ls="--", label="emulated = simulated")
    for k, s in enumerate(scen):
        colour = plots.TARGET_COLOURS[k % len(plots.TARGET_COLOURS)]
        for r in (r for r in pts if r["scenario"] == s):
            mk = POLICY_MARKERS.get(r["policy"], "o")
            ax.plot(r["sim_gains"], r["emu_gains"], ls="none", marker=mk, ms=4, color=colour, alpha=0.35)
            ax.errorbar(
                r["sim_gain_pct"],
                r["emu_gain_pct"],
                yerr=None if r["diff_ci"] != r["diff_ci"] else r["diff_ci"],
                fmt=mk,
                color=colour,
                ms=8,
                elinewidth=1.2,
                capsize=3,
                mec="#dc2626" if not r["pass"] else colour,
                mew=2 if not r["pass"] else 1,
            )
    # legends: colour = scenario, marker = policy
    from matplotlib.lines import Line2D

    h_s = [
        Line2D([], [], ls="none", marker="s", color=plots.TARGET_COLOURS[k % len(plots.TARGET_COLOURS)], label=s)
        for k, s in enumerate(scen)
    ]
    h_p = [
        Line2D([], [], ls="none", marker=POLICY_MARKERS.get(p, "o"), color="#374151", label=p)
        for p in dict.fromkeys(r["policy"] for r in rows)
    ]
    band = ax.get_legend_handles_labels()[0]
    ax.legend(handles=band + h_p + h_s, loc="upper left", fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    m = METRIC_LABELS.get(rows[0]["metric"], "") if rows else ""
    ax.set_xlabel(f"simulated {m} gain over {BASELINE} (%)")
    ax.set_ylabel(f"emulated {m} gain over {BASELINE} (%)")
    ax.set_title("AWC validation: emulated vs simulated gain")
    fig.tight_layout()
    return plots._png(fig)


# ---- HTML ----------------------------------------------------------------------------------------------------


def _html_table(rows: list[dict], table_id: str, judged: bool = True) -> str:
    head = (
        "<tr><th>scenario</th><th>policy</th><th>seeds</th><th>simulated gain %</th><th>emulated gain %</th>"
        "<th>difference (points)</th>" + ("<th>within</th>" if judged else "") + "</tr>"
    )
    body = []
    prev = None
    for r in rows:
        cls = "na" if r["pass"] is None else ("pass" if r["pass"] else "fail")
        first = esc(r["scenario"]) if r["scenario"] != prev else ""
        prev = r["scenario"]
        body.append(
            f"<tr><td>{first}</td><td>{esc(r['policy'])}</td><td>{len(r['seeds'])}</td>"
            f"<td class='sim'>{_pm(r['sim_gain_pct'], r['sim_gain_ci'])}</td>"
            f"<td class='emu'>{_pm(r['emu_gain_pct'], r['emu_gain_ci'])}</td>"
            f"<td class='{cls if judged else 'na'}'>{_pm(r['diff_points'], r['diff_ci'])}</td>"
            + (f"<td class='{cls}'>{'–' if r['pass'] is None else ('✔' if r['pass'] else '✘')}</td>" if judged else "")
            + "</tr>"
        )
    return f"<table id='{table_id}'>{head}{''.join(body)}</table>"


def _runs_table(runs: list[dict]) -> str:
    keys = [
        ("cell", "scenario"),
        ("policy", "policy"),
        ("seed", "seed"),
        ("executor", "executor"),
        ("n_requests", "requests"),
        ("output_token_throughput_tps", "throughput tok/s"),
        ("tpot_ms", "TPOT ms"),
        ("goodput_rps", "goodput req/s"),
        ("mean_gamma", "mean γ"),
        ("duration_s", "duration s"),
        ("wall_s", "wall s"),
        ("error", "error"),
    ]
    head = "<tr>" + "".join(f"<th>{esc(lbl)}</th>" for _k, lbl in keys) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(k))}</td>" for k, _l in keys) + "</tr>" for r in runs)
    return f"<table id='runs-table'>{head}{body}</table>"


def build(run_dir: Path) -> dict[str, Any]:
    """Write DIR/validation.json, DIR/validation.txt, DIR/plots/awc_emu_gains.png and DIR/report.html from
    DIR/result.json alone."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    res = load(run_dir)
    cfg, runs = res.get("config") or {}, res.get("runs") or []
    tol = float(cfg.get("tolerance_points", TOLERANCE_POINTS))
    rows = validation(runs, METRIC, tolerance=tol)
    good = validation(runs, "goodput_rps", tolerance=tol)
    table = format_table(rows)
    vd = verdict(rows)
    write_json(run_dir / "validation.json", {"verdict": vd, "throughput": rows, "goodput": good})
    (run_dir / "validation.txt").write_text(table + "\n\n" + format_table(good) + "\n")
    png = gains_scatter(rows)
    (run_dir / "plots").mkdir(exist_ok=True)
    (run_dir / "plots" / "awc_emu_gains.png").write_bytes(png)
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    if vd["judged"]:
        cls = "ok" if not vd["failed"] else "bad"
        banner = (
            f"<div class='banner {cls}'><b>{vd['passed']} of {vd['judged']}</b> emulated gains within "
            f"{tol:g} points of the simulated ones (largest |difference| {vd['max_abs_diff']:.1f} points)."
            + (f" Outside: {esc(', '.join(vd['failed']))}." if vd["failed"] else "")
            + "</div>"
        )
    else:
        banner = "<div class='banner warn'>No scenario has both executors' runs of a policy and the baseline yet.</div>"
    errors = [r for r in runs if r.get("error")]
    if errors:
        banner += (
            f"<div class='banner warn'><b>{len(errors)} runs failed</b> (left out of the gains)<ul>"
            + "".join(
                f"<li>{esc(r['cell'])} {esc(r['policy'])} seed {r['seed']} {esc(r['executor'])}: {esc(r['error'])}</li>"
                for r in errors
            )
            + "</ul></div>"
        )
    kv = [
        ("topology", cfg.get("topology")),
        ("scenarios", len(cfg.get("cells") or [])),
        ("policies", ", ".join(cfg.get("policies") or [])),
        ("seeds", ", ".join(map(str, cfg.get("seeds") or []))),
        ("requests per run", ", ".join(f"{k}: {v}" for k, v in (cfg.get("n_requests") or {}).items())),
        ("network", cfg.get("net")),
        ("emulation backends", ", ".join(f"{k}={v}" for k, v in (cfg.get("emu_backends") or {}).items())),
        ("commit", cfg.get("commit")),
        ("started", cfg.get("started_at")),
        ("finished", cfg.get("finished_at")),
        ("wall time", f"{cfg['wall_s']:.0f} s" if cfg.get("wall_s") else None),
    ]
    body = "".join(
        [
            "<h1>AWC validation — emulated vs simulated gains</h1>",
            f"<p class='sub'>Gain of each window policy over {BASELINE} in output-token throughput, simulated "
            "(DSD-Sim) and "
            "emulated on the same resolved specs (same seed: same requests and acceptance); paired per seed, "
            "mean ± 95 % Student-t CI over seeds. The validation goal: emulated gains within "
            f"{tol:g} points of the simulated ones.</p>",
            "<div class='kv'>"
            + "".join(f"<div><b>{esc(k)}</b>{esc(v if v not in (None, '') else '–')}</div>" for k, v in kv)
            + "</div>",
            banner,
            "<h2 id='validation'>Per scenario (throughput, judged)</h2>",
            _html_table(rows, "validation-table"),
            "<figure id='fig-gains'><h3>Emulated vs simulated gain</h3><img alt='emulated vs simulated gain' "
            f"src='{uri}'>"
            "<figcaption>Scenario: colour; policy: marker; large: mean over seeds, small: each seed; vertical bar: "
            "95 % CI "
            f"of the paired difference emulated − simulated; dashed: y = x; band: ±{tol:g} points; red rim: outside "
            "the band "
            f"(also <code>plots/awc_emu_gains.png</code>).</figcaption></figure>",
            "<h2 id='goodput'>Goodput gains (not judged)</h2><p class='sub'>Goodput (TTFT ≤ 2 s, TPOT ≤ 100 ms) is a "
            "count of "
            "requests: with tens of requests per run one request is several percent.</p>",
            _html_table(good, "goodput-table", judged=False),
            "<h2 id='runs'>Runs</h2>",
            _runs_table(runs),
        ]
    )
    footer = (
        f"Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))} by <code>python -m analysis.awc_report</code> "
        f"from {esc(run_dir / 'result.json')} in {time.perf_counter() - t0:.1f} s."
    )
    out = run_dir / "report.html"
    out.write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>AWC validation</title>"
        f"<style>{CSS}</style></head><body><main>{body}<footer>{footer}</footer></main></body></html>\n",
        encoding="utf-8",
    )
    return {"report": out, "table": table, "rows": rows, "verdict": vd}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="AWC emulation validation report from DIR/result.json")
    ap.add_argument("dir", type=Path, help="directory holding result.json (bench/awc_emu_check.py --out)")
    a = ap.parse_args(argv)
    out = build(a.dir)
    print(out["table"])
    print(f"-> {out['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
