"""AWC evaluation: AWC vs static gamma in {2, 4, 6, 8}, the HF heuristic and the SpecDec++-like rule, over a
grid of scenarios (RTT 5-100 ms, light to saturating load, fast / slow drafts, iid acceptance 0.6 / 0.8 / 0.95),
seeds as replicates.

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
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml

from testbed.awc.dataset import TOPOLOGY_DIR
from testbed.awc.stats import ci95, rel_pct
from testbed.spec import TopologySpec, resolve, spec_to_yaml

POLICIES = ("awc", "static:2", "static:4", "static:6", "static:8", "hf", "specdec")
STATICS = ("static:2", "static:4", "static:6", "static:8")
RTTS_MS = (5, 20, 50, 100)
ALPHAS = (0.6, 0.8, 0.95)  # iid per-token acceptance: a weak, the default and a strong draft-target pair
LOADS = {"light": 2.0, "saturating": 16.0}  # req/s on star-4edge's one cloud-gpu verifier (~15 req/s capacity)
DRAFTS = {"fast": "edge-npu", "slow": "edge-slow"}
METRICS = ("output_token_throughput_tps", "tpot_mean_ms", "goodput_rps")


@dataclass(frozen=True)
class Cell:
    rtt_ms: float
    load: str
    draft: str
    alpha: float = 0.8

    @property
    def name(self) -> str:
        return f"rtt{self.rtt_ms:g}-{self.load}-{self.draft}-a{self.alpha:g}"


def grid(rtts=RTTS_MS, loads=tuple(LOADS), drafts=tuple(DRAFTS), alphas=ALPHAS) -> list[Cell]:
    return [Cell(r, lo, d, a) for a in alphas for r in rtts for lo in loads for d in drafts]


def cell_spec(cell: Cell, policy: str, seed: int, n_requests: int | None = None, topology: str = "star-4edge") -> dict:
    """star-4edge with the cell's RTT (edge link one-way delay = RTT/2 - 1 ms core link), draft profile, iid
    acceptance alpha and synthetic Poisson load; outputs clipped to 256 tokens to keep runs short."""
    data = yaml.safe_load((TOPOLOGY_DIR / f"{topology}.yaml").read_text())
    core = data["links"][0]["delay_ms"]
    for g in data["edges"]:
        g["link"]["delay_ms"] = max(0.0, cell.rtt_ms / 2.0 - core)
        g["profile"] = DRAFTS[cell.draft]
    rate = LOADS[cell.load]
    n = n_requests or int(min(240, max(60, rate * 30)))
    data["workload"] = {
        "trace": "synthetic",
        "duration_s": None,
        "mapping": "round_robin",
        "max_output_tokens": 256,
        "synthetic": {"n_requests": n, "rate_rps": rate},
    }
    data["policy"]["window"] = policy
    data.setdefault("models", {})["acceptance"] = {"kind": "iid", "alpha": cell.alpha}
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
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "testbed",
                    "emulate",
                    str(run / "input.yaml"),
                    "--net",
                    self.net,
                    "--out",
                    str(run / "out"),
                    "--quiet",
                ],
                check=False,
                timeout=self.timeout_s,
            )
            summary = json.loads((run / "out" / "emu" / "summary.json").read_text())
            meta = run / "out" / "meta.json"
            if meta.is_file():  # the backends the emulation chose (network, shaping, runtime, model)
                summary["backends"] = json.loads(meta.read_text()).get("backends") or {}
            return summary


def _row(cell: Cell, policy: str, seed: int, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "cell": cell.name,
        "rtt_ms": cell.rtt_ms,
        "load": cell.load,
        "draft": cell.draft,
        "alpha": cell.alpha,
        "policy": policy,
        "seed": seed,
        "output_token_throughput_tps": s.get("output_token_throughput_tps") or 0.0,
        "tpot_mean_ms": (s.get("tpot_ms") or {}).get("mean") or float("nan"),
        "goodput_rps": s.get("goodput_rps") or 0.0,
        "mean_gamma": s.get("mean_gamma") or float("nan"),
    }


def _run_one(args: tuple[Cell, str, int, int | None, Executor]) -> dict[str, Any]:
    cell, policy, seed, n, ex = args
    return _row(cell, policy, seed, ex(cell_spec(cell, policy, seed, n)))


def run_grid(
    cells: list[Cell],
    policies=POLICIES,
    seeds=(1, 2, 3),
    executor: Executor | None = None,
    workers: int = 0,
    address: str | None = None,
    n_requests: int | None = None,
    progress=None,
) -> pd.DataFrame:
    """One row per (cell, policy, seed). Parallel on Ray when the executor allows it and workers/address say so."""
    ex = executor or SimExecutor()
    jobs = [(c, p, s, n_requests, ex) for c in cells for p in policies for s in seeds]
    how = "serial (in this process)"
    if ex.parallel and (workers > 0 or address):
        from testbed.awc.ray_runner import parallel_map

        rows, how = parallel_map(_run_one, jobs, workers=workers, address=address, progress=progress)
    else:
        rows = []
        for i, j in enumerate(jobs):
            rows.append(_run_one(j))
            if progress is not None:
                progress(i + 1, len(jobs))
    df = pd.DataFrame(rows)
    df.attrs["ran_on"] = how  # testbed.runner.Runner.mode
    return df


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, policy): mean and CI of each metric."""
    out = []
    for (cell, pol), g in rows.groupby(["cell", "policy"], sort=False):
        r = {
            "cell": cell,
            "rtt_ms": g["rtt_ms"].iloc[0],
            "load": g["load"].iloc[0],
            "draft": g["draft"].iloc[0],
            "alpha": g["alpha"].iloc[0],
            "policy": pol,
            "seeds": len(g),
            "mean_gamma": float(g["mean_gamma"].mean()),
        }
        for m in METRICS:
            r[m] = float(g[m].mean())
            r[m + "_ci"] = ci95(g[m].to_numpy(dtype=float))
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
        per = rows[rows["cell"] == cell].pivot_table(
            index="seed", columns="policy", values=["goodput_rps", "output_token_throughput_tps", "tpot_mean_ms"]
        )
        r: dict[str, Any] = {"cell": cell, "alpha": g["alpha"].iloc[0], "best_static": best}

        def rel(pol: str, ref: str, m: str) -> tuple[float, float]:
            d = rel_pct(per[m][pol], per[m][ref])
            return float(d.mean()), ci95(d)

        for pol in [p for p in by.index if p not in STATICS] + ["static:4"]:
            for m, short in (
                ("goodput_rps", "good"),
                ("output_token_throughput_tps", "tput"),
                ("tpot_mean_ms", "tpot"),
            ):
                r[f"{pol}_{short}_vs_best_pct"], r[f"{pol}_{short}_vs_best_pct_ci"] = rel(pol, best, m)
        if "awc" in by.index and "static:4" in by.index:
            for m, short in (
                ("goodput_rps", "good"),
                ("output_token_throughput_tps", "tput"),
                ("tpot_mean_ms", "tpot"),
            ):
                r[f"awc_{short}_vs_static4_pct"], r[f"awc_{short}_vs_static4_pct_ci"] = rel("awc", "static:4", m)
        out.append(r)
    return pd.DataFrame(out)


def format_table(summary: pd.DataFrame, gap: pd.DataFrame, executor: str = "sim") -> str:
    lines = [f"AWC evaluation ({executor}); mean ± 95% CI over seeds; throughput tok/s, TPOT ms, goodput req/s"]
    hdr = f"{'scenario':<30}{'policy':<10}{'gamma':>6}{'throughput':>18}{'TPOT':>16}{'goodput':>16}"
    for cell, g in summary.groupby("cell", sort=False):
        lines.append("")
        lines.append(hdr)
        for _, r in g.iterrows():
            lines.append(
                f"{cell:<30}{r['policy']:<10}{r['mean_gamma']:>6.2f}"
                f"{r['output_token_throughput_tps']:>10.1f} ±{r['output_token_throughput_tps_ci']:>6.1f}"
                f"{r['tpot_mean_ms']:>9.1f} ±{r['tpot_mean_ms_ci']:>5.1f}"
                f"{r['goodput_rps']:>9.3f} ±{r['goodput_rps_ci']:>5.3f}"
            )
        gr = gap[gap["cell"] == cell].iloc[0]
        if "awc_good_vs_best_pct" in gr:

            def pc(k: str) -> str:
                return f"{gr[k]:+.1f}% ±{gr[k + '_ci']:.1f}"

            lines.append(
                f"  hindsight-best static: {gr['best_static']}; AWC vs it (paired over seeds): goodput "
                f"{pc('awc_good_vs_best_pct')}, throughput {pc('awc_tput_vs_best_pct')}, TPOT "
                f"{pc('awc_tpot_vs_best_pct')}; "
                f"AWC vs static:4: throughput {pc('awc_tput_vs_static4_pct')}, goodput "
                f"{pc('awc_good_vs_static4_pct')}, "
                f"TPOT {pc('awc_tpot_vs_static4_pct')}"
            )
    lines.append("")
    lines.append(
        "gap to the hindsight-best static gamma per scenario, mean of paired per-seed differences (goodput % / "
        "throughput %):"
    )
    pols = [c[: -len("_good_vs_best_pct")] for c in gap.columns if c.endswith("_good_vs_best_pct")]
    lines.append(f"{'scenario':<30}{'best':<10}" + "".join(f"{p:>18}" for p in pols))
    for _, r in gap.iterrows():
        lines.append(
            f"{r['cell']:<30}{r['best_static']:<10}"
            + "".join(f"{r[p + '_good_vs_best_pct']:>+9.1f}/{r[p + '_tput_vs_best_pct']:>+7.1f}" for p in pols)
        )
    for label, part in _by_alpha(gap, "mean", "mean "):
        lines.append(
            f"{label:<40}"
            + "".join(
                f"{part[p + '_good_vs_best_pct'].mean():>+9.1f}/{part[p + '_tput_vs_best_pct'].mean():>+7.1f}"
                for p in pols
            )
        )
    lines.append(
        f"{'worst goodput gap':<40}" + "".join(f"{gap[p + '_good_vs_best_pct'].min():>+9.1f}{'':>8}" for p in pols)
    )
    lines.append("")
    lines += goal_lines(gap)
    return "\n".join(lines)


def _by_alpha(gap: pd.DataFrame, label: str, prefix: str = "") -> list[tuple[str, pd.DataFrame]]:
    """All scenarios (`label`), then each acceptance alpha's (when the grid has several)."""
    parts = [(label, gap)]
    if "alpha" in gap and gap["alpha"].nunique() > 1:
        parts += [(f"{prefix}a={a:g}", gap[gap["alpha"] == a]) for a in gap["alpha"].unique()]
    return parts


def goal_lines(gap: pd.DataFrame, within_pct: float = 3.0) -> list[str]:
    """AWC against the issue's goals, over all scenarios and per acceptance alpha: scenarios within `within_pct`
    of the hindsight-best static window (goodput and throughput), and the throughput gain over static:4 where
    the best static window is not 4."""
    if "awc_good_vs_best_pct" not in gap:
        return []
    out = []
    for label, g in _by_alpha(gap, "all"):
        ok_g = int((g["awc_good_vs_best_pct"] >= -within_pct).sum())
        ok_t = int((g["awc_tput_vs_best_pct"] >= -within_pct).sum())
        line = (
            f"AWC [{label}]: within {within_pct:g}% of the hindsight-best static in {ok_g}/{len(g)} scenarios "
            "(goodput), "
            f"{ok_t}/{len(g)} (throughput); mean gap {g['awc_good_vs_best_pct'].mean():+.1f}% goodput, "
            f"{g['awc_tput_vs_best_pct'].mean():+.1f}% throughput"
        )
        d = g[g["best_static"] != "static:4"]
        if len(d) and "awc_tput_vs_static4_pct" in d:
            line += (
                f"; vs static:4 where the best static is not 4 ({len(d)} scenarios): throughput "
                f"{d['awc_tput_vs_static4_pct'].mean():+.1f}% (best {d['awc_tput_vs_static4_pct'].max():+.1f}%), "
                f"goodput {d['awc_good_vs_static4_pct'].mean():+.1f}%, TPOT {d['awc_tpot_vs_static4_pct'].mean():+.1f}%"
                f"; static:4's own gap to the best static there: {d['static:4_tput_vs_best_pct'].mean():+.1f}% "
                "throughput"
            )
        out.append(line)
    return out
