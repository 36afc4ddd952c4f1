"""The HTML report of a run directory: DIR/report.html (self-contained: CSS inline, figures as base64 data URIs)
and the same figures as DIR/plots/*.png.

Sections: header (scenario, backends, run time), status (verdict, or what completed for partial / sim-only runs),
comparison table (errors green within tolerance, red outside), figures, per-node tables, the as-built link table
(emu/links.json), run details. Everything is recomputed from the tables (analysis.compare).
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from analysis import plots
from analysis.compare import Side, compare_run, read_summary_json
from analysis.scan import frames
from testbed.metrics import Quantiles
from testbed.rundir import write_json

CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --ok:#dcfce7; --okfg:#166534; --bad:#fee2e2; --badfg:#991b1b;
        --warn:#fef3c7; --warnfg:#92400e; --info:#e0f2fe; --infofg:#075985; --sim:#2563eb; --emu:#ea580c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       margin: 0; background: #f9fafb; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; min-height: 100vh; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.kv { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 6px 20px; margin: 12px 0; }
.kv div { border-left: 3px solid var(--line); padding: 2px 8px; overflow-wrap: anywhere; }
.kv b { display: block; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
font-weight: 600; }
.banner { padding: 12px 16px; border-radius: 6px; margin: 14px 0; font-size: 15px; }
.banner.ok { background: var(--ok); color: var(--okfg); } .banner.bad { background: var(--bad); color: var(--badfg); }
.banner.warn { background: var(--warn); color: var(--warnfg); } .banner.info { background: var(--info); color:
var(--infofg); }
.banner ul { margin: 6px 0 0; padding-left: 20px; font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #f3f4f6; font-weight: 600; font-size: 12px; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
td.txt, th.txt { text-align: left; white-space: normal; }
th.grp { text-align: center; border-left: 2px solid #fff; }
table.nodes td.err { border-right: 2px solid var(--line); }
tr.group td { background: #f9fafb; font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase;
letter-spacing: .04em; }
td.pass { background: var(--ok); color: var(--okfg); font-weight: 600; }
td.fail { background: var(--bad); color: var(--badfg); font-weight: 600; }
td.na { color: var(--muted); }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; font-weight: 600; }
.tag.ok { background: var(--ok); color: var(--okfg); } .tag.bad { background: var(--bad); color: var(--badfg); }
.sim { color: var(--sim); font-weight: 600; } .emu { color: var(--emu); font-weight: 600; }
figure { margin: 12px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.cols { display: flex; gap: 32px; flex-wrap: wrap; align-items: flex-start; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--muted); }
pre { background: #f3f4f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; margin: 14px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; border-top: 4px solid var(--line); }
.card.pass { border-top-color: #16a34a; } .card.fail { border-top-color: #dc2626; }
.card .l { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; font-weight: 600; }
.card .v { font-size: 20px; font-weight: 600; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .e { font-size: 13px; } .card.pass .e { color: var(--okfg); } .card.fail .e { color: var(--badfg); }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if not isinstance(v, float):
        return esc(v)
    a = abs(v)
    if a >= 1000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.1f}"
    elif a >= 1 or a == 0:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return s


def fmt_err(e: float | None) -> str:
    if e is None:
        return "–"
    return f"{e * 100:+.1f} %"


def _tol(t: float | None) -> str:
    return "–" if t is None else f"±{t * 100:g} %"


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


# ---- sections ------------------------------------------------------------------------------------------------


def header(run: Path, meta: dict[str, Any], doc: dict[str, Any]) -> str:
    scen = meta.get("scenario") or run.name
    backends = dict(meta.get("backends") or {})
    emu_net = (_emu_recorded(run).get("emulator") or {}).get("network") or {}
    for k, v in emu_net.items():
        backends.setdefault(k, v)
    wl = meta.get("workload") or {}
    items = [
        ("scenario", scen),
        ("run directory", str(run)),
        ("started", meta.get("started_at")),
        ("seed", meta.get("seed")),
        ("topology source", meta.get("source")),
        ("trace", wl.get("trace")),
        ("requests in workload", wl.get("requests")),
        ("testbed", f"{meta.get('testbed_version', '?')} · python {meta.get('python', '?')} · {meta.get('host', '?')}"),
    ]
    items += [(f"backend: {k}", v) for k, v in backends.items()]
    for n in doc["columns"]:
        s = doc["summaries"].get(n)
        if s:
            items.append((f"{n} duration", f"{s['duration_s']:.1f} s"))
    kv = "".join(f"<div><b>{esc(k)}</b>{esc(v if v is not None else '–')}</div>" for k, v in items)
    desc = _spec_description(run)
    return (
        f"<h1>DSD testbed report — {esc(scen)}</h1>"
        f"<p class='sub'>{esc(desc) or 'Emulated vs simulated distributed speculative decoding'}</p>"
        f"<div class='kv'>{kv}</div>"
    )


def _spec_description(run: Path) -> str:
    p = run / "spec.yaml"
    if not p.is_file():
        return ""
    try:
        import yaml  # pyyaml is a core dependency (spec loading)

        d = yaml.safe_load(p.read_text()) or {}
        return " ".join(str(d.get("description") or "").split())
    except Exception:  # noqa: BLE001 - a description is decoration
        return ""


def _emu_recorded(run: Path) -> dict[str, Any]:
    return read_summary_json(run / "emu")


def status(run: Path, doc: dict[str, Any], sim: Side | None, emu: Side | None) -> str:
    parts = []
    if emu is None or sim is None:
        missing = "emu" if emu is None else "sim"
        present = "sim" if emu is None else "emu"
        what = completed_steps(run)
        why = ""
        rec = _emu_recorded(run)
        if missing == "emu" and rec.get("partial_reason"):
            why = f" The emulation stopped: {esc(rec['partial_reason'])}."
        elif missing == "emu" and (run / "emu").is_dir():
            why = " An emu/ directory exists but holds no request table (the emulation did not reach collection)."
        parts.append(
            f"<div class='banner warn'><b>{present.capitalize()}-only report:</b> there are no {missing}ulated "
            f"results in <code>{esc(run / missing)}</code>, so nothing is compared.{why}"
            f"<ul>{''.join(f'<li>{w}</li>' for w in what)}</ul></div>"
        )
    if emu is not None and emu.partial:
        s = emu.summary
        crashed = emu.recorded.get("crashed_nodes") or []
        items = [
            f"{s['requests_completed']} of {s['requests_total']} requests completed, {s['requests_failed']} failed, "
            f"{s['requests_unfinished']} unfinished",
            f"emulated time covered: {s['duration_s']:.1f} s",
        ]
        if crashed:
            items.append("nodes that died: " + ", ".join(esc(c) for c in crashed) + " (logs in emu/logs/)")
        for n in emu.recorded.get("notes") or []:
            items.append(esc(n))
        items += completed_steps(run)
        parts.append(
            f"<div class='banner warn'><b>Partial run:</b> {esc(emu.partial_reason or 'reason not recorded')}. "
            f"The emulated metrics below cover what completed only; compare them with care."
            f"<ul>{''.join(f'<li>{i}</li>' for i in items)}</ul></div>"
        )
    net = ((emu.recorded.get("emulator") or {}).get("network") or {}) if emu is not None else {}
    sim_links = str(((_read_json(run / "meta.json") or {}).get("sim") or {}).get("links", ""))
    if (
        sim is not None
        and emu is not None
        and net.get("network") == "none"
        and sim_links.startswith("as-built loopback")
    ):
        parts.append(
            "<div class='banner info'><b>No emulated network:</b> the emulation ran its nodes on loopback "
            "(<code>--net none</code>) and the simulation modelled the same unshaped links.</div>"
        )
    elif sim is not None and emu is not None and net.get("network") == "none":
        parts.append(
            "<div class='banner info'><b>No emulated network:</b> the emulation ran its nodes on loopback "
            "(<code>--net none</code>, no link shaping) while the simulation models the topology's links, "
            "so latency differences include the network delays the emulation did not have.</div>"
        )
    v = doc["verdict"]
    if v["judged"]:
        cls = "ok" if not v["failed"] else "bad"
        msg = (
            f"<b>{v['passed']} of {v['judged']}</b> metrics within tolerance "
            f"({esc(doc['columns'][1])} vs {esc(doc['columns'][0])})."
        )
        if v["failed"]:
            labels = {r["metric"]: r["label"] for r in doc["metrics"]}
            msg += " Outside: " + ", ".join(esc(labels[m]) for m in v["failed"]) + "."
        parts.append(f"<div class='banner {cls}'>{msg}</div>")
    return "".join(parts)


def completed_steps(run: Path) -> list[str]:
    """What of the run-directory contract exists (for partial and sim-only reports)."""
    steps = [
        ("spec.yaml", "resolved spec"),
        ("meta.json", "run metadata"),
        ("sim/requests.parquet", "simulation"),
        ("emu/requests.parquet", "emulation results"),
        ("emu/links.json", "as-built link table"),
        ("emu/logs", "node logs"),
    ]
    out = []
    for rel, what in steps:
        ok = (run / rel).exists()
        out.append(f"{'✔' if ok else '✘'} {esc(what)} (<code>{esc(rel)}</code>){'' if ok else ': missing'}")
    return out


HEADLINE = [
    "request_throughput_rps",
    "output_token_throughput_tps",
    "ttft_ms.mean",
    "tpot_ms.mean",
    "ttft_ms.p99",
    "tpot_ms.p99",
]


def headline_cards(doc: dict[str, Any]) -> str:
    """The fidelity figures of the project (throughput, mean and p99 TTFT / TPOT) at a glance."""
    a, b = doc["columns"]
    rows = {r["metric"]: r for r in doc["metrics"]}
    cards = []
    for k in HEADLINE:
        r = rows[k]
        cls = "" if r["pass"] is None else ("pass" if r["pass"] else "fail")
        unit = f" <small>{esc(r['unit'])}</small>" if r["unit"] else ""
        if r[a] is not None and r[b] is not None:
            v = f"<span class='sim'>{fmt(r[a])}</span> → <span class='emu'>{fmt(r[b])}</span>{unit}"
            e = f"{fmt_err(r['rel_error'])} (tolerance {_tol(r['tolerance'])})"
        else:
            only = a if r[a] is not None else b
            v = f"<span class='{esc(only)}'>{fmt(r[only])}</span>{unit}"
            e = esc(only)
        cards.append(
            f"<div class='card {cls}'><div class='l'>{esc(r['label'])}</div><div class='v'>{v}</div>"
            f"<div class='e'>{e}</div></div>"
        )
    return f"<div class='cards'>{''.join(cards)}</div>"


def comparison_table(doc: dict[str, Any]) -> str:
    a, b = doc["columns"]
    both = all(doc["summaries"].get(n) for n in (a, b))
    head = (
        f"<tr><th>metric</th><th>unit</th><th class='{a}'>{esc(a)}</th><th class='{b}'>{esc(b)}</th>"
        + ("<th>rel. error</th><th>tolerance</th><th>within</th>" if both else "")
        + "</tr>"
    )
    rows = []
    group = None
    names = {
        "run": "run",
        "latency": "latency",
        "throughput": "throughput",
        "speculation": "speculation",
        "batching": "batching",
    }
    for r in doc["metrics"]:
        if r["group"] != group:
            group = r["group"]
            rows.append(f"<tr class='group'><td colspan='{7 if both else 4}'>{esc(names.get(group, group))}</td></tr>")
        cells = (
            f"<td>{esc(r['label'])}</td><td class='na'>{esc(r['unit'])}</td><td>{fmt(r[a])}</td><td>{fmt(r[b])}</td>"
        )
        if both:
            cls = "na" if r["pass"] is None else ("pass" if r["pass"] else "fail")
            title = f" title='{esc(r['note'])}'" if r["note"] else ""
            verdict = "–" if r["pass"] is None else ("✔" if r["pass"] else "✘")
            cells += (
                f"<td class='{cls}'{title}>{fmt_err(r['rel_error'])}</td><td class='na'>{_tol(r['tolerance'])}</td>"
                f"<td class='{cls}'>{verdict}</td>"
            )
        rows.append(f"<tr>{cells}</tr>")
    note = (
        (
            "<p class='sub'>Relative error = ("
            + esc(b)
            + " − "
            + esc(a)
            + ") / "
            + esc(a)
            + ". Green: within tolerance; red: outside. Tolerances in <a href='#tolerances'>run details</a>.</p>"
        )
        if both
        else ""
    )
    return f"<h2 id='comparison'>Comparison</h2>{note}<table id='comparison-table'>{head}{''.join(rows)}</table>"


KEY_METRICS = ["request_throughput_rps", "ttft_ms.mean", "tpot_ms.mean", "e2e_ms.mean", "ttft_ms.p99", "tpot_ms.p99"]


def fidelity_views(doc: dict[str, Any]) -> str:
    """Disturbance banner, the robust verdict, and configured vs as-built predictions side by side."""
    out = []
    dist = doc.get("disturbance")
    if dist:
        if dist["warnings"]:
            out.append(
                "<div class='banner warn' id='disturbance'><b>This run was disturbed; the comparison is not to be "
                "trusted as a verdict on the simulator:</b><ul>"
                + "".join(f"<li>{esc(w)}</li>" for w in dist["warnings"])
                + "</ul></div>"
            )
        h = dist.get("host_load") or {}
        dl = dist.get("delay_line") or {}
        items = [
            f"host: {fmt(h.get('runnable_mean'))} runnable tasks on average (p90 {fmt(h.get('runnable_p90'))}) on "
            f"{h.get('cores', '?')} cores, CPU "
            f"{fmt(100 * h['cpu_busy_frac']) if h.get('cpu_busy_frac') is not None else '–'} % busy",
            f"delay line: {dl.get('late_over_1ms', 0)} of {dl.get('released', 0)} packets over 1 ms late, mean "
            f"{fmt(dl.get('late_mean_us'))} µs, max {fmt(dl.get('late_max_us'))} µs "
            f"({esc(', '.join(dl.get('sched') or []) or '–')})",
            f"node timers: worst p99 lateness {fmt((dist.get('node_timers_worst_p99_us') or 0) / 1e3)} ms "
            f"({esc(dist.get('node_timers_worst') or '–')})",
        ]
        for p in dist.get("probes") or []:
            items.append(
                f"path {esc(p['path'])}: RTT residual {p['before_ms']:+.2f} ms before, {p['after_ms']:+.2f} ms after "
                f"(std {fmt(p.get('std_before_ms'))} / {fmt(p.get('std_after_ms'))} ms)"
            )
        out.append(
            "<h3 id='disturbance-record'>Disturbance record</h3><ul class='sub'>"
            + "".join(f"<li>{i}</li>" for i in items)
            + "</ul>"
        )
    rob = doc.get("robust")
    if rob:
        vd, facts = doc["robust_verdict"], doc.get("robust_facts") or {}
        rows = []
        for r in rob:
            cls = "na" if r["pass"] is None else ("pass" if r["pass"] else "fail")
            rows.append(
                f"<tr><td>{esc(r['metric'])}</td><td>{fmt(r['sim'])}</td><td>{fmt(r['emu'])}</td>"
                f"<td class='{cls}'>{fmt_err(r['rel_error'])}</td><td class='na'>{_tol(r['tolerance'])}</td></tr>"
            )
        w = facts.get("window_s") or [0, 0]
        out.append(
            "<h3 id='robust'>Robust verdict</h3><p class='sub'>Throughput over the arrival window "
            f"({w[0]:.1f}–{w[1]:.1f} s: the steady state, not the drain) and latencies over the routing-matched "
            f"subset ({facts.get('matched_requests', 0)} of {facts.get('completed_reference', 0)} simulated "
            f"completions at the same target on both sides): {vd['passed']} of {vd['judged']} within tolerance. "
            "What each verdict means: <code>analysis/compare.py</code>.</p><table id='robust-table'><tr><th>metric</th>"
            "<th class='sim'>sim</th><th class='emu'>emu</th><th>rel. error</th><th>tolerance</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    spread = doc.get("spread")
    if spread and spread.get("skipped"):
        out.append(f"<p class='sub' id='spread'>Simulator spread: {esc(spread['skipped'])}.</p>")
    elif spread:
        vd = doc["spread_verdict"]
        rows = []
        for r in spread["rows"]:
            cls = "na" if r["pass"] is None else ("pass" if r["pass"] else "fail")
            inside = "–" if r["inside"] is None else ("yes" if r["inside"] else "no")
            rows.append(
                f"<tr><td>{esc(r['metric'])}</td><td>{fmt_err(r['rel_error'])}</td>"
                f"<td>{fmt_err(r['rel_lo'])} … {fmt_err(r['rel_hi'])}</td><td class='{cls}'>{inside}</td>"
                f"<td class='na'>{_tol(r['tolerance'])}</td></tr>"
            )
        out.append(
            "<h3 id='spread'>Simulator spread over the network's randomness</h3><p class='sub'>The simulation "
            f"repeated with {spread['net_seeds']} other network seeds (jitter and loss draws differ, nothing else): "
            "the range of the simulated values relative to the main simulation. A correct simulator puts the "
            f"emulated value inside it with probability {100 * spread['coverage']:.0f} %. Within tolerance or "
            f"inside: {vd['passed']} of {vd['judged']}.</p><table id='spread-table'><tr><th>metric</th>"
            "<th>emu vs sim</th><th>simulated range</th><th>emu inside</th><th>tolerance</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    pred = doc.get("predictions")
    if pred:
        conf, built = pred["configured"], pred["as-built"]
        rows = []
        for k in KEY_METRICS:
            ec, eb = conf["rel_error"].get(k), built["rel_error"].get(k)
            rows.append(f"<tr><td>{esc(k)}</td><td>{fmt_err(ec)}</td><td>{fmt_err(eb)}</td></tr>")
        out.append(
            "<h3 id='predictions'>Configured vs as-built prediction</h3><p class='sub'>The same emulation judged "
            "against the simulation of the configured links and of the as-built ones (residuals both path probes "
            f"agree on, <code>testbed/spec/asbuilt.py</code>): {conf['verdict']['passed']} / "
            f"{built['verdict']['passed']} of {built['verdict']['judged']} metrics within tolerance.</p>"
            "<table id='predictions-table'><tr><th>metric</th><th>error vs configured</th><th>error vs "
            "as-built</th></tr>" + "".join(rows) + "</table>"
        )
    cpred = doc.get("compute_predictions")
    if cpred:
        prof, built = cpred["profile"], cpred["as-built"]
        rows = [
            f"<tr><td>{esc(k)}</td><td>{fmt_err(prof['rel_error'].get(k))}</td>"
            f"<td>{fmt_err(built['rel_error'].get(k))}</td></tr>"
            for k in KEY_METRICS
        ]
        out.append(
            "<h3 id='compute-predictions'>Profile vs as-built compute</h3><p class='sub'>The same emulation judged "
            "against the simulation with the compute profile (as checked / recalibrated before the run) and with the "
            "cost terms fitted on the run's own rounds and batches (<code>testbed/calibrate/fromrun.py</code>): "
            f"{prof['verdict']['passed']} / {built['verdict']['passed']} of {built['verdict']['judged']} metrics "
            "within tolerance.</p><table id='compute-predictions-table'><tr><th>metric</th><th>error vs profile</th>"
            "<th>error vs as-built compute</th></tr>" + "".join(rows) + "</table>"
        )
    return "".join(out)


def figures(imgs: dict[str, bytes]) -> str:
    out = ["<h2 id='plots'>Plots</h2>"]
    for name, png in imgs.items():
        d = plots.describe(name)
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        out.append(
            f"<figure id='fig-{name}'><h3>{esc(d['title'])}</h3><img alt='{esc(d['title'])}' src='{uri}'>"
            f"<figcaption>{esc(d['caption'])} (also <code>plots/{name}.png</code>)</figcaption></figure>"
        )
    return "".join(out)


def _node_table(
    table_id: str, first: str, cols: list[str], names: list[str], stats: list[tuple[str, str]], value: Any
) -> str:
    """A per-node table: one row per node, for each statistic a sub-column per side (+ relative error)."""
    from analysis.compare import relative_error

    both = len(cols) == 2
    span = 3 if both else 1
    h1 = (
        f"<tr><th rowspan='2'>{esc(first)}</th>"
        + "".join(f"<th colspan='{span}' class='grp'>{esc(lbl)}</th>" for _k, lbl in stats)
        + "</tr>"
    )
    sub = "".join(f"<th class='{c}'>{esc(c)}</th>" for c in cols) + ("<th>err</th>" if both else "")
    h2 = "<tr>" + sub * len(stats) + "</tr>"
    rows = []
    for n in names:
        cells = [f"<td>{esc(n)}</td>"]
        for k, _l in stats:
            vs = [value(c, n, k) for c in cols]
            cells += [f"<td>{fmt(v)}</td>" for v in vs]
            if both:
                cells.append(f"<td class='na err'>{fmt_err(relative_error(vs[0], vs[1]))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table id='{table_id}' class='nodes'>{h1}{h2}{''.join(rows)}</table>"


def node_tables(doc: dict[str, Any]) -> str:
    cols = [c for c in doc["columns"] if doc["summaries"].get(c)]
    edges_by = doc["per_node"]["edges"]
    names = sorted({e for c in cols for e in (edges_by.get(c) or {})}, key=plots._natural)
    stats = [
        ("requests_completed", "completed"),
        ("ttft_ms.mean", "TTFT mean"),
        ("ttft_ms.p99", "TTFT p99"),
        ("tpot_ms.mean", "TPOT mean"),
        ("e2e_ms.mean", "E2E mean"),
        ("e2e_ms.p99", "E2E p99"),
    ]

    def edge_val(c: str, e: str, k: str) -> Any:
        v: Any = (edges_by.get(c) or {}).get(e) or {}
        for part in k.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        return v

    edge_html = (
        f"<h3>Edges</h3><p class='sub'>Latencies in ms over each edge's completed requests; "
        f"err = relative error of {esc(cols[-1])} against {esc(cols[0])}.</p>"
        + _node_table("edges-table", "edge", cols, names, stats, edge_val)
        if names
        else "<p class='sub'>No edge data.</p>"
    )
    tg_by = doc["per_node"]["targets"]
    tnames = sorted({t for c in cols for t in (tg_by.get(c) or {})}, key=plots._natural)
    tstats = [
        ("requests_routed", "requests routed"),
        ("batches", "batches"),
        ("mean_verify_batch", "mean verify batch"),
        ("utilisation", "utilisation"),
    ]
    tg_html = (
        "<h3>Targets</h3>"
        + _node_table(
            "targets-table", "target", cols, tnames, tstats, lambda c, t, k: ((tg_by.get(c) or {}).get(t) or {}).get(k)
        )
        if tnames
        else ""
    )
    return f"<h2 id='nodes'>Per node</h2>{edge_html}{tg_html}"


def links_table(run: Path) -> str:
    p = run / "emu" / "links.json"
    if not p.is_file():
        return ""
    d = _read_json(p)
    h = "<h2 id='links'>Network as built</h2>"
    if not isinstance(d, dict):
        return h + f"<p class='sub'>{esc(p)} is not readable JSON.</p>"
    if d.get("error"):
        return h + f"<div class='banner bad'>The as-built link report failed: {esc(d['error'])}</div>"
    paths = d.get("paths") or []
    if not paths:
        return h + (
            "<p class='sub'>No emulated network (nodes ran on loopback, no shaping): there are no links to report.</p>"
        )
    bk = d.get("backends") or {}
    out = [
        h,
        "<p class='sub'>Every draft → target path, configured vs measured after the network was built "
        f"(verification mode: {esc(d.get('mode', '?'))}; backends: "
        + esc(", ".join(f"{k}={v}" for k, v in bk.items()) or "–")
        + "). RTT includes serialisation of the probe."
        + "</p>",
    ]
    head = (
        "<tr><th>path</th><th class='txt'>hops</th><th>RTT conf.</th><th>RTT p50</th><th>RTT p99</th><th>RTT err</th>"
        "<th>jitter (RTT std) conf.</th><th>meas.</th><th>rate conf.<br>Mbit/s</th><th>meas.</th>"
        "<th>loss conf. %</th><th>meas.</th><th>ok</th></tr>"
    )
    rows = []
    for e in paths:
        c, m = e.get("configured") or {}, e.get("measured") or {}
        ok = e.get("ok")
        cls = "na" if ok is None else ("pass" if ok else "fail")
        probs = "; ".join(e.get("problems") or [])
        rows.append(
            f"<tr><td>{esc(e.get('src'))} → {esc(e.get('dst'))}</td><td "
            f"class='txt'>{esc(' · '.join(map(str, e.get('hops') or [])))}</td>"
            f"<td>{fmt(c.get('rtt_ms'))}</td><td>{fmt(m.get('rtt_p50_ms'))}</td><td>{fmt(m.get('rtt_p99_ms'))}</td>"
            f"<td>{fmt(e.get('rtt_error_ms'))}</td>"
            f"<td>{fmt(c.get('rtt_std_ms'))}</td><td>{fmt(m.get('rtt_std_ms'))}</td>"
            f"<td>{fmt(c.get('rate_mbps'))}</td><td>{fmt(m.get('rate_mbps'))}</td>"
            f"<td>{fmt(c.get('rtt_loss_pct', c.get('loss_pct')))}</td><td>{fmt(m.get('loss_pct'))}</td>"
            f"<td class='{cls}' title='{esc(probs)}'>{'–' if ok is None else ('✔' if ok else '✘')}</td></tr>"
        )
    out.append(
        f"<table id='links-table'>{head}{''.join(rows)}</table><p class='sub'>Times in ms; "
        "rate measured on one representative path per class of (rate, delay, loss).</p>"
    )
    warns = d.get("warnings") or []
    if warns:
        out.append(
            "<div class='banner warn'><b>Warnings</b><ul>"
            + "".join(f"<li>{esc(w)}</li>" for w in warns)
            + "</ul></div>"
        )
    links = d.get("links") or []
    if links:
        keys = [
            k
            for k in ("a", "b", "bw_mbps", "delay_ms", "jitter_ms", "loss_pct", "queue_pkts", "intf_a", "intf_b")
            if any(k in l for l in links)
        ]
        lrows = "".join("<tr>" + "".join(f"<td>{fmt(l.get(k))}</td>" for k in keys) + "</tr>" for l in links)
        out.append(
            "<details><summary>Configured links</summary><table>"
            + "<tr>"
            + "".join(f"<th>{esc(k)}</th>" for k in keys)
            + f"</tr>{lrows}</table></details>"
        )
    return "".join(out)


def interference(run: Path, meta: dict[str, Any]) -> str:
    """Real models only: how much co-located compute slowed verify batches and drafts (analysis.compute_overlap)."""
    if ((meta.get("backends") or {}).get("model") or "profiled") == "profiled":
        return ""
    from analysis.compute_overlap import overlap_stats

    st = overlap_stats(run / "emu")
    if not st:
        return ""
    h = (
        "<h2 id='interference'>Compute interference on this host</h2><p class='sub'>Real models: every node "
        "computed on this machine, so a verify batch running while a draft computes shares cores, caches and memory "
        "bandwidth with it (separate edge and cloud machines would not; the simulator has no such term). Mean "
        f"durations alone (&lt; {100 * st['thresholds']['alone_below']:.0f} % overlap) vs together (&gt; "
        f"{100 * st['thresholds']['together_above']:.0f} %).</p>"
    )
    rows = [
        f"<tr><td class='txt'>verify, batch {c['batch_size']}, {c['tokens']} tokens</td><td>{fmt(c['alone_ms'])} "
        f"({c['alone_n']})</td><td>{fmt(c['together_ms'])} ({c['together_n']})</td><td>{fmt(c['ratio'])}</td></tr>"
        for c in st["verify_classes"]
    ]
    d = st["draft"]
    rows.append(
        f"<tr><td class='txt'>draft, ms per token (rounds after the first)</td><td>{fmt(d['alone_ms'])} "
        f"({d['alone_n']})</td><td>{fmt(d['together_ms'])} ({d['together_n']})</td><td>{fmt(d['ratio'])}</td></tr>"
    )
    share = st.get("verify_overlapped_share")
    note = (
        f"<p class='sub'>{100 * share:.0f} % of verify batches overlapped a draft for more than half their time.</p>"
        if share is not None
        else ""
    )
    return (
        h + "<table id='interference-table'><tr><th class='txt'>what</th><th>alone ms (n)</th><th>together ms (n)"
        "</th><th>ratio</th></tr>" + "".join(rows) + "</table>" + note
    )


def draft_ms_per_token(rounds: pd.DataFrame | Iterable[pd.DataFrame]) -> dict[str, float]:
    """Median drafting time per drafted token per edge (draft_start -> send, rounds with gamma > 0 after each
    request's first round, whose draft also prefills), from a rounds table or its chunks."""
    per: dict[str, Quantiles] = {}
    for r in [rounds] if isinstance(rounds, pd.DataFrame) else rounds:
        r = r[(r["gamma"] > 0) & (r["round"] > 0)]
        ms = 1e3 * (r["send_s"] - r["draft_start_s"]) / r["gamma"]
        for e, v in ms.groupby(r["edge"].astype(str)):
            per.setdefault(str(e), Quantiles()).add(v.to_numpy())
    return {e: float(q.quantiles([0.5])[0]) for e, q in per.items() if q.n}


def runtime_section(run: Path) -> str:
    """The node runtime of the emulation: process or docker (image, per-node limits, exit / OOM), and each draft
    node's measured drafting time per token beside its CPU limit (a CPU limit shows up there)."""
    s = _emu_recorded(run)
    rt = (s.get("emulator") or {}).get("runtime")
    if not rt:
        return ""
    nodes = s.get("nodes") or {}
    cols = ["edge", "round", "gamma", "draft_start_s", "send_s"]
    rp = run / "emu" / "rounds.parquet"
    draft = draft_ms_per_token(frames(run / "emu", "rounds", cols, ("edge",))) if rp.is_file() else {}
    limits = rt.get("limits") or {}
    kv = [("runtime", rt.get("runtime"))]
    if rt.get("runtime") == "docker":
        lab = rt.get("labels") or {}
        kv += [
            ("image", rt.get("image")),
            ("image source version", lab.get("dsd.version")),
            ("image size", f"{rt.get('size_mb', '?')} MB"),
            ("base", lab.get("dsd.base")),
        ]
        kv += [(k.replace("_", " "), f"{v:.2f} s") for k, v in (rt.get("timings") or {}).items()]
    head = "".join(f"<div><b>{esc(k)}</b>{esc(v if v is not None else '–')}</div>" for k, v in kv)
    rows = []
    for name, info in sorted(nodes.items()):
        lim = limits.get(name) or {}
        rows.append(
            f"<tr><td class='txt'>{esc(name)}</td><td>{fmt(lim.get('cpu_share'))}</td>"
            f"<td>{fmt(lim.get('memory_mb'))}</td><td>{fmt(draft.get(name))}</td>"
            f"<td>{fmt(info.get('cpu_used_s'))}</td><td>{fmt(info.get('cpu_throttled_s'))}</td>"
            f"<td>{fmt(info.get('exit_code'))}</td><td>{'yes' if info.get('oom_killed') else 'no'}</td></tr>"
        )
    return (
        "<h2 id='runtime'>Node runtime</h2><div class='kv'>" + head + "</div>"
        "<table id='runtime-table'><tr><th class='txt'>node</th><th>CPU limit (cores)</th><th>memory limit (MB)</th>"
        "<th>draft ms / token (median)</th><th>CPU used (s)</th><th>CPU-throttled (s)</th><th>exit code</th>"
        "<th>OOM-killed</th></tr>" + "".join(rows) + "</table>"
    )


def details(run: Path, meta: dict[str, Any], doc: dict[str, Any]) -> str:
    tol = "".join(
        f"<tr><td class='txt'>{esc(t['statistic'])}</td><td>{_tol(t['tolerance'])}</td></tr>"
        for t in doc["tolerance_table"]
    )
    sides = "".join(
        f"<tr><td>{esc(n)}</td><td class='txt'>{esc((doc['sides'][n] or {}).get('path', '–'))}</td>"
        f"<td>{fmt((doc['sides'][n] or {}).get('partial'))}</td></tr>"
        for n in doc["columns"]
    )
    slo = next((s.get("slo") for s in doc["summaries"].values() if s), None) or {}
    out = [
        "<h2 id='details'>Run details</h2><div class='cols'>",
        f"<div><h3 id='tolerances'>Tolerances</h3><table>"
        f"<tr><th class='txt'>statistic</th><th>|rel. error| ≤</th></tr>{tol}</table></div>",
        "<div><h3>Sources</h3><table><tr><th>side</th><th "
        f"class='txt'>directory</th><th>partial</th></tr>{sides}</table>"
        f"<p class='sub'>Goodput SLOs: TTFT ≤ {fmt(slo.get('ttft_ms'))} ms, TPOT ≤ {fmt(slo.get('tpot_ms'))} "
        "ms.</p></div>",
        "</div>",
    ]
    out.append(f"<details><summary>meta.json</summary><pre>{esc(json.dumps(meta, indent=2))}</pre></details>")
    log = run / "run.log"
    if log.is_file():
        try:
            tail = log.read_text(errors="replace").splitlines()[-40:]
        except OSError:
            tail = []
        out.append(
            f"<details><summary>run.log (last {len(tail)} "
            f"lines)</summary><pre>{esc(chr(10).join(tail))}</pre></details>"
        )
    return "".join(out)


# ---- build ---------------------------------------------------------------------------------------------------


def build(run: Path, write_compare: bool = True) -> dict[str, Any]:
    """Write DIR/report.html and DIR/plots/*.png (and DIR/compare.json); returns paths and timings."""
    run = Path(run)
    t0 = time.perf_counter()
    doc, sim, emu = compare_run(run, figures=True)
    t_load = time.perf_counter() - t0
    meta = _read_json(run / "meta.json") or {}
    sides = [(n, s) for n, s in (("sim", sim), ("emu", emu)) if s is not None]
    imgs = plots.render_all(sides)
    t_plots = time.perf_counter() - t0 - t_load
    pdir = run / "plots"
    pdir.mkdir(exist_ok=True)
    for name, png in imgs.items():
        (pdir / f"{name}.png").write_bytes(png)
    if write_compare:
        write_json(run / "compare.json", doc)
    scen = meta.get("scenario") or run.name
    nav = " · ".join(
        f"<a href='#{i}'>{t}</a>"
        for i, t in (
            ("comparison", "comparison"),
            ("plots", "plots"),
            ("nodes", "per node"),
            ("links", "network"),
            ("runtime", "runtime"),
            ("details", "details"),
        )
    )
    body = "".join(
        [
            header(run, meta, doc),
            f"<p class='sub'>{nav}</p>",
            status(run, doc, sim, emu),
            headline_cards(doc),
            comparison_table(doc),
            fidelity_views(doc),
            figures(imgs),
            node_tables(doc),
            links_table(run),
            runtime_section(run),
            interference(run, meta),
            details(run, meta, doc),
        ]
    )
    elapsed = time.perf_counter() - t0
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>DSD report — {esc(scen)}</title><style>{CSS}</style></head><body><main>{body}"
        f"<footer>Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))} by <code>python -m testbed report</code> "
        f"from the tables of {esc(run)} in {elapsed:.1f} s. Figures are also in <code>plots/</code>; numbers in "
        f"<code>compare.json</code>.</footer></main></body></html>\n"
    )
    out = run / "report.html"
    tmp = run / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return {
        "report": out,
        "plots": sorted(pdir / f"{n}.png" for n in imgs),
        "compare": run / "compare.json",
        "seconds": {"load_compare": t_load, "plots": t_plots, "total": time.perf_counter() - t0},
    }
