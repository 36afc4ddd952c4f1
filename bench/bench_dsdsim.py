"""DSD-Sim against the paper author's simulator dsdSim (github.com/yfzzzyyls/dsdSim), side by side on matched work
(`make bench-dsdsim DSDSIM=/path/to/dsdSim [DSDSIM_PY=python-with-its-deps]`; issue 14): 64 drafts, one verifier,
gamma = 4, alpha = 0.8 iid, 128-token prompts and outputs, 10 ms one-way links, flat costs (draft 5 ms per token,
verify 40 ms and prefill 64 ms per batch whatever its size, batches up to 32), loaded near saturation.

dsdSim is never a dependency: it runs from a copy of the given checkout, in its own Python (it needs simpy, pyyaml,
numpy, joblib, networkx), with the two local patches its current commit needs: an empty
thirdparty/Sai_speculative_vidur directory, and in `_generate_blocking` the predicted acceptance used where no
observed one exists yet. dsdSim is closed-loop (each draft starts its next conversation 1 ms after the last one
ends); DSD-Sim replays Poisson arrivals at the conversation rate dsdSim reached. The figure compared is rounds
(verify jobs) per second of simulation wall time: dsdSim's own `simulation_ms` (env.run) against
SimResult.wall_s. Exit 1 when the ratio is below the goal (7x).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from testbed import compiled
from testbed.sim import simulate
from testbed.spec import load_scenario

DRAFTS, GAMMA, ALPHA, TOKENS, LINK_MS = 64, 4, 0.8, 128, 10.0
DRAFT_MS, VERIFY_MS, PREFILL_MS, MAX_BATCH = 5.0, 40.0, 64.0, 32
GOAL = 7.0
OBSERVED_RAISE = """            if observed_acceptance is None:
                raise RuntimeError(
                    f"Observed acceptance ratio unavailable for target={target_id}. "
                    "Enable empirical acceptance tracking before running gamma policies."
                )"""
OBSERVED_PREDICTED = """            if observed_acceptance is None:
                observed_acceptance = predicted_acceptance"""


def dsdsim_config(sim_s: float) -> dict:
    target = dict(id="t0", role="target", model="m", gpu="g", weight=1.0, batch_size=MAX_BATCH)
    # a batch takes its longest job: 0.5 ms x 128 prompt tokens = 64 ms, 10 ms x 4 tokens = 40 ms, at any size;
    # the batch window is the smallest dsdSim accepts (0 serves one job at a time)
    target.update(
        batch_window_ms=0.01, prefill_latency_per_token=PREFILL_MS / TOKENS, decode_latency_per_token=VERIFY_MS / GAMMA
    )
    sched = dict(pool="default", queue_policy="fifo", max_batch_requests=MAX_BATCH, max_wait_ms=0.0)
    return dict(
        sim_time_ms=sim_s * 1e3,
        seed=1,
        verbose=False,
        debug=False,
        execution_mode="blocking",
        gamma=GAMMA,
        mixed_batching=False,
        router="round_robin",
        answer_length=TOKENS,
        use_answer_distribution=False,
        prompt_length_min=TOKENS,
        prompt_length_max=TOKENS,
        prompt_scale_by_capability=False,
        workload=dict(arrival="poisson", rate_rps=20.0),
        think_time=dict(enabled=True, distribution="constant", mean_ms=1.0, min_ms=0.0),
        performance_model=dict(type="default"),
        speculation=dict(framework="vanilla", execution_mode="distributed", acceptance=dict(disable_model=True)),
        scheduler=dict(pools=dict(default=dict(targets=["t0"])), prefill=sched, decode=sched),
        devices=[target]
        + [dict(id=f"d{i}", role="draft", capability=1.0, generation_latency_ms=DRAFT_MS) for i in range(DRAFTS)],
        connections=[
            dict(
                draft=f"d{i}",
                target="t0",
                forward_latency_ms=LINK_MS,
                response_latency_ms=LINK_MS,
                acceptance_rate=ALPHA,
            )
            for i in range(DRAFTS)
        ],
    )


def run_dsdsim(checkout: Path, python: str, sim_s: float, tmp: Path) -> dict:
    src = tmp / "dsdSim"
    shutil.copytree(checkout, src, ignore=shutil.ignore_patterns(".git"))
    (src / "thirdparty" / "Sai_speculative_vidur").mkdir(parents=True, exist_ok=True)
    sim_py = src / "src" / "sim.py"
    text = sim_py.read_text()
    if OBSERVED_RAISE in text:
        sim_py.write_text(text.replace(OBSERVED_RAISE, OBSERVED_PREDICTED))
    elif OBSERVED_PREDICTED not in text:
        raise SystemExit(f"{sim_py}: the _generate_blocking patch does not apply (another dsdSim commit?)")
    cfg = tmp / "dsdsim.yaml"
    cfg.write_text(yaml.safe_dump(dsdsim_config(sim_s)))
    out = subprocess.run(
        [python, "src/sim.py", "--config", str(cfg)], cwd=src, capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0 or "===METRICS_JSON===" not in out.stdout:
        raise SystemExit(f"dsdSim failed (rc {out.returncode}): {out.stderr.strip()[-500:]}")
    m = json.loads(out.stdout.split("===METRICS_JSON===", 1)[1].split("===END_METRICS_JSON===", 1)[0])
    jobs = round(m["throughput_jobs_s"] * m["observed_span_ms"] / 1e3)  # completed jobs (len of its latency list)
    rounds = jobs - m["conversation_count"]  # one prefill job per conversation, the rest are verify rounds
    wall = m["profiler"]["simulation_ms"] / 1e3
    return dict(
        rounds=rounds,
        wall_s=round(wall, 3),
        rounds_per_s=round(rounds / wall),
        conversations_per_sim_s=round(m["conversation_throughput_rps"], 2),
        acceptance=round(m["acceptance_rate"], 3),
    )


def run_ours(rate: float, sim_s: float, tmp: Path) -> dict:
    rng = random.Random(1)
    t, lines = 0.0, []
    while t < sim_s:
        lines.append(json.dumps({"t": round(t, 6), "prompt_tokens": TOKENS, "output_tokens": TOKENS}))
        t += rng.expovariate(rate)
    trace = tmp / "matched.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    topo = dict(
        name="matched-dsdsim",
        seed=1,
        profiles={
            "flat-draft": {"draft_step": {"base_ms": DRAFT_MS}},
            "flat-target": {"prefill": {"base_ms": PREFILL_MS}, "verify": {"base_ms": VERIFY_MS}},
        },
        nodes=[dict(name="cloud0", role="target", profile="flat-target")],
        edges=[dict(prefix="edge", count=DRAFTS, profile="flat-draft", link={"to": "cloud0", "delay_ms": LINK_MS})],
        workload=dict(trace=str(trace), format="native", duration_s=None),
        policy=dict(window=f"static:{GAMMA}", routing="jsq", batching=dict(kind="fifo", max_batch_reqs=MAX_BATCH)),
        models=dict(acceptance=dict(kind="iid", alpha=ALPHA)),
    )
    path = tmp / "matched.yaml"
    path.write_text(yaml.safe_dump(topo))
    r = simulate(load_scenario(path))
    rounds = len(r.rounds)
    return dict(
        rounds=rounds,
        wall_s=round(r.wall_s, 3),
        rounds_per_s=round(rounds / r.wall_s),
        requests=len(r.requests),
        compiled_core=compiled.active(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dsdsim", type=Path, help="a dsdSim checkout (github.com/yfzzzyyls/dsdSim)")
    ap.add_argument("--python", default="python3", help="the Python that has dsdSim's dependencies")
    ap.add_argument("--sim-s", type=float, default=120.0, help="simulated seconds of each run")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dsdsim-") as tmp:
        theirs = run_dsdsim(a.dsdsim.resolve(), a.python, a.sim_s, Path(tmp))
        ours = run_ours(theirs["conversations_per_sim_s"], a.sim_s, Path(tmp))
    ratio = ours["rounds_per_s"] / theirs["rounds_per_s"]
    out = {"dsdsim": theirs, "dsd_sim": ours, "ratio": round(ratio, 2)}
    for side in ("dsdsim", "dsd_sim"):
        print(f"{side:>8}: " + ", ".join(f"{k} {v}" for k, v in out[side].items()))
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"DSD-Sim / dsdSim rounds per wall-second: {ratio:.2f}x (goal >= {GOAL:.0f}x: {verdict})")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    if ratio < GOAL:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
