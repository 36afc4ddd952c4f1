"""AWC evaluation: AWC vs static gamma in {2, 4, 6, 8}, the HF heuristic and the SpecDec++-like rule, over a
grid of scenarios (RTT 5-100 ms, light to saturating load, fast / slow drafts), seeds as replicates.

Metrics (testbed.metrics, the definitions both executors use): output token throughput, mean TPOT,
goodput (SLO TTFT <= 2 s, TPOT <= 100 ms), each as mean and 95 % confidence interval (Student t) over seeds.
Per scenario, the hindsight-best static gamma is the static policy with the highest mean goodput
(throughput as tie-break); AWC's gap to it and its throughput gain over static:4 are reported.

The executor is an argument: `SimExecutor` (DSD-Sim, in process) or `EmuExecutor` (runs
`python -m testbed emulate` on the same resolved spec and reads DIR/emu/summary.json); the table of one
can be compared with the other's per scenario (emulated vs simulated gains).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from testbed.awc.dataset import TOPOLOGY_DIR
from testbed.spec import TopologySpec, resolve, spec_to_yaml

POLICIES = ("awc", "static:2", "static:4", "static:6", "static:8", "hf", "specdec")
STATICS = ("static:2", "static:4", "static:6", "static:8")
RTTS_MS = (5, 20, 50, 100)
LOADS = {"light": 2.0, "saturating": 16.0}  # req/s on star-4edge's one cloud-gpu verifier (~15 req/s capacity)
DRAFTS = {"fast": "edge-npu", "slow": "edge-slow"}
METRICS = ("output_token_throughput_tps", "tpot_mean_ms", "goodput_rps")


@dataclass(frozen=True)
class Cell:
    rtt_ms: float
    load: str
    draft: str

    @property
    def name(self) -> str:
        return f"rtt{self.rtt_ms:g}-{self.load}-{self.draft}"


def grid(rtts=RTTS_MS, loads=tuple(LOADS), drafts=tuple(DRAFTS)) -> list[Cell]:
    return [Cell(r, lo, d) for r in rtts for lo in loads for d in drafts]


def cell_spec(cell: Cell, policy: str, seed: int, n_requests: int | None = None, topology: str = "star-4edge") -> dict:
    """star-4edge with the cell's RTT (edge link one-way delay = RTT/2 - 1 ms core link), draft profile and
    synthetic Poisson load; outputs clipped to 256 tokens to keep runs short."""
    data = yaml.safe_load((TOPOLOGY_DIR / f"{topology}.yaml").read_text())
    core = data["links"][0]["delay_ms"]
    for g in data["edges"]:
        g["link"]["delay_ms"] = max(0.0, cell.rtt_ms / 2.0 - core)
        g["profile"] = DRAFTS[cell.draft]
    rate = LOADS[cell.load]
    n = n_requests or int(min(240, max(60, rate * 30)))
    data["workload"] = {"trace": "synthetic", "duration_s": None, "mapping": "round_robin", "max_output_tokens": 256,
                        "synthetic": {"n_requests": n, "rate_rps": rate}}
    data["policy"]["window"] = policy
    data["seed"] = seed
    data["name"] = f"awc-eval-{cell.name}"
    return data


class Executor(Protocol):
    name: str
    parallel: bool  # may run several cells at once (False: timing-sensitive emulation, one at a time)

    def __call__(self, spec: dict) -> dict[str, Any]: ...


class SimExecutor:
    name = "sim"
    parallel = True

    def __call__(self, spec: dict) -> dict[str, Any]:
        from testbed.sim import simulate

        return simulate(resolve(TopologySpec.model_validate(spec), source=f"<{spec['name']}>")).summary


class EmuExecutor:
    """Emulation through the CLI (the emulator is started as a program, never imported)."""

    name = "emu"
    parallel = False

    def __init__(self, net: str = "mininet", timeout_s: float = 900.0, keep: Path | None = None):
        self.net = net
        self.timeout_s = timeout_s
        self.keep = keep

    def __call__(self, spec: dict) -> dict[str, Any]:
        scenario = resolve(TopologySpec.model_validate(spec), source=f"<{spec['name']}>")
        with tempfile.TemporaryDirectory(prefix="awc-emu-") as tmp:
            root = Path(self.keep) if self.keep else Path(tmp)
            run = root / f"{spec['name']}-{spec['policy']['window'].replace(':', '')}-s{spec['seed']}"
            run.mkdir(parents=True, exist_ok=True)
            (run / "input.yaml").write_text(spec_to_yaml(scenario.spec))
            subprocess.run([sys.executable, "-m", "testbed", "emulate", str(run / "input.yaml"), "--net", self.net,
                            "--out", str(run / "out"), "--quiet"], check=False, timeout=self.timeout_s)
            return json.loads((run / "out" / "emu" / "summary.json").read_text())


def _row(cell: Cell, policy: str, seed: int, s: dict[str, Any]) -> dict[str, Any]:
    return {"cell": cell.name, "rtt_ms": cell.rtt_ms, "load": cell.load, "draft": cell.draft, "policy": policy,
            "seed": seed, "output_token_throughput_tps": s.get("output_token_throughput_tps") or 0.0,
            "tpot_mean_ms": (s.get("tpot_ms") or {}).get("mean") or float("nan"),
            "goodput_rps": s.get("goodput_rps") or 0.0, "mean_gamma": s.get("mean_gamma") or float("nan")}


def _run_one(args: tuple[Cell, str, int, int | None, Executor]) -> dict[str, Any]:
    cell, policy, seed, n, ex = args
    return _row(cell, policy, seed, ex(cell_spec(cell, policy, seed, n)))


def run_grid(cells: list[Cell], policies=POLICIES, seeds=(1, 2, 3), executor: Executor | None = None,
             workers: int = 0, address: str | None = None, n_requests: int | None = None, progress=None) -> pd.DataFrame:
    """One row per (cell, policy, seed). Parallel on Ray when the executor allows it and workers/address say so."""
    ex = executor or SimExecutor()
    jobs = [(c, p, s, n_requests, ex) for c in cells for p in policies for s in seeds]
    if ex.parallel and (workers > 0 or address):
        from testbed.awc.ray_runner import parallel_map

        rows = parallel_map(_run_one, jobs, workers=workers, address=address, progress=progress)
    else:
        rows = []
        for i, j in enumerate(jobs):
            rows.append(_run_one(j))
            if progress is not None:
                progress(i + 1, len(jobs))
    return pd.DataFrame(rows)


def _ci(x: np.ndarray) -> float:
    """Half-width of the 95 % Student-t confidence interval of the mean."""
    n = len(x)
    if n < 2:
        return float("nan")
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)
    return float(t * np.std(x, ddof=1) / math.sqrt(n))


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, policy): mean and CI of each metric."""
    out = []
    for (cell, pol), g in rows.groupby(["cell", "policy"], sort=False):
        r = {"cell": cell, "rtt_ms": g["rtt_ms"].iloc[0], "load": g["load"].iloc[0], "draft": g["draft"].iloc[0],
             "policy": pol, "seeds": len(g), "mean_gamma": float(g["mean_gamma"].mean())}
        for m in METRICS:
            r[m] = float(g[m].mean())
            r[m + "_ci"] = _ci(g[m].to_numpy(dtype=float))
        out.append(r)
    return pd.DataFrame(out)


def gaps(summary: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the hindsight-best static window (highest mean goodput, then throughput); every policy's
    relative gap to it and AWC's gain over static:4, as the mean over seeds of the paired per-seed
    difference (same seed = same requests and acceptance), with its 95 % CI half-width (`*_ci`)."""
    out = []
    for cell, g in summary.groupby("cell", sort=False):
        by = g.set_index("policy")
        st = by.loc[[p for p in STATICS if p in by.index]]
        best = st.sort_values(["goodput_rps", "output_token_throughput_tps"], ascending=False).index[0]
        per = rows[rows["cell"] == cell].pivot_table(index="seed", columns="policy",
                                                     values=["goodput_rps", "output_token_throughput_tps", "tpot_mean_ms"])
        r: dict[str, Any] = {"cell": cell, "best_static": best}

        def rel(pol: str, ref: str, m: str) -> tuple[float, float]:
            a, b = per[m][pol].to_numpy(float), per[m][ref].to_numpy(float)
            d = np.where(b > 0, 100.0 * (a - b) / np.where(b > 0, b, 1.0), 0.0)
            return float(d.mean()), _ci(d)

        for pol in [p for p in by.index if p not in STATICS] + ["static:4"]:
            for m, short in (("goodput_rps", "good"), ("output_token_throughput_tps", "tput"), ("tpot_mean_ms", "tpot")):
                r[f"{pol}_{short}_vs_best_pct"], r[f"{pol}_{short}_vs_best_pct_ci"] = rel(pol, best, m)
        if "awc" in by.index and "static:4" in by.index:
            for m, short in (("goodput_rps", "good"), ("output_token_throughput_tps", "tput"), ("tpot_mean_ms", "tpot")):
                r[f"awc_{short}_vs_static4_pct"], r[f"awc_{short}_vs_static4_pct_ci"] = rel("awc", "static:4", m)
        out.append(r)
    return pd.DataFrame(out)


def format_table(summary: pd.DataFrame, gap: pd.DataFrame, executor: str = "sim") -> str:
    lines = [f"AWC evaluation ({executor}); mean ± 95% CI over seeds; throughput tok/s, TPOT ms, goodput req/s"]
    hdr = f"{'scenario':<24}{'policy':<10}{'gamma':>6}{'throughput':>18}{'TPOT':>16}{'goodput':>16}"
    for cell, g in summary.groupby("cell", sort=False):
        lines.append("")
        lines.append(hdr)
        for _, r in g.iterrows():
            lines.append(f"{cell:<24}{r['policy']:<10}{r['mean_gamma']:>6.2f}"
                         f"{r['output_token_throughput_tps']:>10.1f} ±{r['output_token_throughput_tps_ci']:>6.1f}"
                         f"{r['tpot_mean_ms']:>9.1f} ±{r['tpot_mean_ms_ci']:>5.1f}"
                         f"{r['goodput_rps']:>9.3f} ±{r['goodput_rps_ci']:>5.3f}")
        gr = gap[gap["cell"] == cell].iloc[0]
        if "awc_good_vs_best_pct" in gr:
            def pc(k: str) -> str:
                return f"{gr[k]:+.1f}% ±{gr[k + '_ci']:.1f}"
            lines.append(f"  hindsight-best static: {gr['best_static']}; AWC vs it (paired over seeds): goodput "
                         f"{pc('awc_good_vs_best_pct')}, throughput {pc('awc_tput_vs_best_pct')}, TPOT {pc('awc_tpot_vs_best_pct')}; "
                         f"AWC vs static:4: throughput {pc('awc_tput_vs_static4_pct')}, goodput {pc('awc_good_vs_static4_pct')}, "
                         f"TPOT {pc('awc_tpot_vs_static4_pct')}")
    lines.append("")
    lines.append("gap to the hindsight-best static gamma per scenario, mean of paired per-seed differences (goodput % / throughput %):")
    pols = [c[:-len("_good_vs_best_pct")] for c in gap.columns if c.endswith("_good_vs_best_pct")]
    lines.append(f"{'scenario':<24}{'best':<10}" + "".join(f"{p:>18}" for p in pols))
    for _, r in gap.iterrows():
        lines.append(f"{r['cell']:<24}{r['best_static']:<10}" + "".join(
            f"{r[p + '_good_vs_best_pct']:>+9.1f}/{r[p + '_tput_vs_best_pct']:>+7.1f}" for p in pols))
    mean = {p: (gap[p + "_good_vs_best_pct"].mean(), gap[p + "_tput_vs_best_pct"].mean(),
                gap[p + "_good_vs_best_pct"].min()) for p in pols}
    lines.append(f"{'mean':<34}" + "".join(f"{mean[p][0]:>+9.1f}/{mean[p][1]:>+7.1f}" for p in pols))
    lines.append(f"{'worst goodput gap':<34}" + "".join(f"{mean[p][2]:>+9.1f}{'':>8}" for p in pols))
    if "awc_tput_vs_static4_pct" in gap:
        diff = gap[gap["best_static"] != "static:4"]
        if len(diff):
            lines.append(f"AWC throughput vs static:4 where the best static window is not 4 ({len(diff)} scenarios): "
                         f"mean {diff['awc_tput_vs_static4_pct'].mean():+.1f}%, goodput {diff['awc_good_vs_static4_pct'].mean():+.1f}%, "
                         f"TPOT {diff['awc_tpot_vs_static4_pct'].mean():+.1f}%")
    return "\n".join(lines)
