"""Adaptive Window Control (AWC): train the WC-DNN on simulator rollouts, evaluate it against static and
heuristic windows.

  python -m testbed awc train [--out WEIGHTS.npz] [--samples N] [--address RAY] [--workers W] [--seed S]
  python -m testbed awc eval  [--weights WEIGHTS.npz] [--seeds 3] [--executor sim|emu] [--workers W]

train: labels N simulator configurations (topology families x sampled delays, rates, drafts, acceptance,
loads) by rollouts of every candidate window (testbed/awc/dataset.py), in parallel on Ray (local by
default, a cluster with --address), then trains the MLP with torch, reports the data set and the
leave-one-family-out accuracy against the oracle, and writes numpy weights (default: the shipped
testbed/policies/awc_weights.npz). eval: AWC vs static:2/4/6/8, hf and specdec over RTT 5-100 ms,
light / saturating load, fast / slow drafts, iid acceptance 0.6 / 0.8 / 0.95, in simulation (or emulation with
--executor emu)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from testbed.errors import InputError
from testbed.progress import JobProgress


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="awc_command", metavar="{train,eval}", required=True)
    t = sub.add_parser("train", help="generate rollout labels (Ray) and train the WC-DNN")
    t.add_argument(
        "--out", type=Path, default=None, help="weights file (.npz; default: testbed/policies/awc_weights.npz)"
    )
    t.add_argument(
        "--samples",
        type=int,
        default=None,
        help="configurations to label (each: up to 2 branch points x 7 candidate rollouts, up to 8 rows); "
        "default 360, or reuse --data when it exists",
    )
    t.add_argument(
        "--data",
        type=Path,
        default=Path("runs/awc/data.parquet"),
        help="labelled data set: read when it exists and --samples is not given, else written",
    )
    t.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray with --workers CPUs)")
    t.add_argument("--workers", type=int, default=2, help="local Ray CPUs (0: serial, no Ray)")
    t.add_argument("--seed", type=int, default=0, help="seed of the data set's configurations and of training")
    t.add_argument("--epochs", type=int, default=400)
    t.add_argument("--branches", type=int, default=2, help="branch points per configuration")
    t.add_argument("--max-requests", type=int, default=200, help="requests per configuration's workload")
    e = sub.add_parser("eval", help="AWC vs static and heuristic windows, with CIs over seeds")
    e.add_argument("--weights", type=Path, default=None, help="AWC weights (default: the shipped ones)")
    e.add_argument("--seeds", type=int, default=3, help="replicates per scenario and policy")
    e.add_argument(
        "--executor", choices=("sim", "emu"), default="sim", help="sim: DSD-Sim; emu: python -m testbed emulate"
    )
    e.add_argument("--net", choices=("none", "mininet"), default="mininet", help="network of the emu executor")
    e.add_argument("--address", default=None, help="Ray cluster address")
    e.add_argument("--workers", type=int, default=0, help="local Ray CPUs for the sim executor (0: serial)")
    e.add_argument(
        "--alphas", type=float, nargs="+", default=None, help="iid acceptance values of the grid (default 0.6 0.8 0.95)"
    )
    e.add_argument("--quick", action="store_true", help="RTT 5 and 100 ms, alpha 0.8 only, 2 seeds (a smoke run)")
    e.add_argument("--out", type=Path, default=None, help="directory for rows.csv / summary.csv / gaps.csv / table.txt")


def run(args: argparse.Namespace) -> int:
    return _train(args) if args.awc_command == "train" else _eval(args)


def _train(args: argparse.Namespace) -> int:
    import pandas as pd

    from testbed.awc.dataset import tasks
    from testbed.awc.ray_runner import generate
    from testbed.awc.train import TrainConfig, train_all
    from testbed.policies.awc import DEFAULT_WEIGHTS, save_weights

    t0 = time.perf_counter()
    if args.samples is None and args.data.is_file():
        df = pd.read_parquet(args.data)
        print(f"data: {args.data} ({len(df)} rows)")
    else:
        n = args.samples or 360
        if n < 1:
            raise InputError("--samples", "must be >= 1")
        with JobProgress("labelled configurations", n) as bar:
            rows, how = generate(
                tasks(n, args.seed),
                workers=args.workers,
                address=args.address,
                n_branches=args.branches,
                max_requests=args.max_requests,
                progress=lambda d, tot: bar.update(d, total=tot),
            )
        if not rows:
            raise InputError("--samples", "no samples were produced; use more configurations")
        df = pd.DataFrame(rows)
        args.data.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(args.data)
        print(f"labelling ran on: {how}")
        print(f"data: {len(df)} rows from {n} configurations, {time.perf_counter() - t0:.0f} s -> {args.data}")
    net, held, meta = train_all(df, TrainConfig(seed=args.seed, epochs=args.epochs))
    print(
        f"data set: {meta['samples']} samples, {meta['branches']} labelled branch points, {meta['configs']} "
        "configurations, "
        f"families {meta['families']}"
    )
    print("label distribution: " + ", ".join(f"{k}:{v}" for k, v in df["label"].value_counts().sort_index().items()))
    print("held-out (leave-one-family-out) accuracy vs the oracle:")
    print(held.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(
        f"AWC held-out: exact {meta['heldout_exact']:.3f}, goodput regret {100 * meta['heldout_goodput_regret']:.2f}%, "
        f"rate regret {100 * meta['heldout_rate_regret']:.2f}%; train exact {meta['train_exact']:.3f}"
    )
    out = args.out or DEFAULT_WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, net)
    print(
        f"model: MLP {len(net.mu)}-{'-'.join(str(w.shape[0]) for w, _ in net.layers)}, {net.n_params} parameters, "
        f"{out.stat().st_size} bytes -> {out}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from testbed.awc.evaluate import (
        ALPHAS,
        POLICIES,
        EmuExecutor,
        SimExecutor,
        format_table,
        gaps,
        grid,
        run_grid,
        summarise,
    )

    policies = tuple(f"awc:{args.weights}" if p == "awc" and args.weights else p for p in POLICIES)
    ex = SimExecutor() if args.executor == "sim" else EmuExecutor(net=args.net)
    alphas = tuple(args.alphas) if args.alphas else ((0.8,) if args.quick else ALPHAS)
    cells = grid(rtts=(5, 100), alphas=alphas) if args.quick else grid(alphas=alphas)
    seeds = tuple(range(1, (2 if args.quick else args.seeds) + 1))
    t0 = time.perf_counter()
    with JobProgress("runs", len(cells) * len(policies) * len(seeds)) as bar:
        rows = run_grid(
            cells,
            policies,
            seeds,
            ex,
            workers=args.workers,
            address=args.address,
            progress=lambda d, tot: bar.update(d, total=tot),
        )
    print(f"ran on: {rows.attrs.get('ran_on', 'serial (in this process)')}")
    rows["policy"] = rows["policy"].where(~rows["policy"].str.startswith("awc"), "awc")
    summary = summarise(rows)
    gap = gaps(summary, rows)
    table = format_table(summary, gap, ex.name)
    print(table)
    print(f"{len(rows)} runs in {time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        rows.to_csv(args.out / "rows.csv", index=False)
        summary.to_csv(args.out / "summary.csv", index=False)
        gap.to_csv(args.out / "gaps.csv", index=False)
        (args.out / "table.txt").write_text(table + "\n")
    return 0
