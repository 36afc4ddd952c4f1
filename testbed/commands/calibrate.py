"""Measure real models on this machine and fit a compute profile; record acceptance sequences.

    python -m testbed calibrate [--draft M] [--target M] [--out testbed/profiles/NAME.yaml] [--quick]

Times draft steps, the draft's first call (its prompt prefill), target prefill batches and target verify
batches (hf backend) over a grid of batch size, gamma and context, fits the linear cost terms of
testbed.compute by non-negative least squares on relative errors and
writes a profile (fit quality R² / max error in its description and in NAME.fit.json). Unless
--record 0, it also records per-request greedy acceptance sequences of the pair on real prompts with the
lengths of a trace (or of a topology's workload) into NAME.acceptance.npz, for exact replay
(acceptance kind `recorded`, testbed/acceptance_recorded.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from testbed.errors import InputError

GRID_FULL = {
    "draft_ctx": [64, 128, 256, 1024, 2048],
    "draft_prefill_L": [16, 64, 128, 256, 1024],
    "prefill_B": [1, 2, 4],
    "prefill_L": [16, 64, 128, 256, 1024],
    "verify_B": [1, 2, 4, 8],
    "verify_gamma": [0, 1, 4, 8],  # 0: one token (an autoregressive step), see CostSpec.multi_token_ms
    "verify_ctx": [64, 128, 256, 1024, 2048],
    "reps": 5,
}
GRID_QUICK = {
    "draft_ctx": [128, 512],
    "draft_prefill_L": [32, 256],
    "prefill_B": [1, 2],
    "prefill_L": [64, 256],
    "verify_B": [1, 2, 4],
    "verify_gamma": [0, 2, 4],
    "verify_ctx": [128, 512],
    "reps": 1,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--draft", default="smollm2-135m-draft", help="draft model: shipped name, local directory or cached hub id"
    )
    p.add_argument("--target", default="smollm2-135m", help="target model (same forms)")
    p.add_argument(
        "--out", type=Path, default=None, help="profile to write (default testbed/profiles/hf-<target>.yaml)"
    )
    p.add_argument(
        "--quick", action="store_true", help="small grid, one repetition, 4 recorded requests (a minute or two)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--record",
        type=int,
        default=None,
        metavar="N",
        help="record acceptance sequences of N requests (default 24, quick 4; 0 = none)",
    )
    p.add_argument("--trace", default="azure-conv", help="trace whose request lengths the recording uses")
    p.add_argument(
        "--topology", default=None, help="record the requests of this topology's workload instead (ids match its runs)"
    )
    p.add_argument("--max-prompt", type=int, default=1024, help="clip recorded prompts to this many tokens")
    p.add_argument("--max-output", type=int, default=128, help="clip recorded outputs to this many tokens")
    p.add_argument(
        "--max-ctx",
        type=int,
        default=None,
        metavar="N",
        help="time only contexts / prompt lengths up to N tokens: a linear fit is best where it was measured, so "
        "calibrate for the contexts your runs have (e.g. 256 for topologies/hf-pair.yaml)",
    )
    p.add_argument(
        "--estimator",
        choices=("median", "min"),
        default="median",
        help="per grid point: median of the repetitions (typical time, default) or minimum (best case; for a "
        "machine busy with other jobs)",
    )
    p.add_argument(
        "--grid-json",
        default=None,
        metavar="JSON",
        help="time this grid instead (a JSON object with any of the keys " + ", ".join(GRID_QUICK) + "; the others "
        "from the quick grid): `testbed run --profile-check recalibrate` passes the run's own contexts, prompt "
        "lengths, batch sizes and windows, so the fit is measured where the run operates",
    )
    p.add_argument("--skip-timing", action="store_true", help="only record acceptance")
    p.add_argument(
        "--lookup-ngram",
        type=int,
        default=None,
        metavar="N",
        help="record acceptance with prompt lookup of N tokens before the draft model (models.lookup_ngram; "
        "default: the --topology's, else 0)",
    )


def parse_grid(text: str) -> dict:
    """A --grid-json value: the quick grid with the given axes replaced (positive integers, windows from 0;
    reps >= 1)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError("--grid-json", f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError("--grid-json", "must be a JSON object")
    grid = dict(GRID_QUICK)
    for k, v in data.items():
        if k not in GRID_QUICK:
            raise InputError("--grid-json", f"unknown key {k!r} (known: {', '.join(GRID_QUICK)})")
        low = 0 if k == "verify_gamma" else 1  # window 0: a one-token verify (an autoregressive step)
        if k == "reps":
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
        else:
            ok = (
                isinstance(v, list)
                and v
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= low for x in v)
            )
        if not ok:
            what = {"reps": "an integer >= 1", "verify_gamma": "integers >= 0"}.get(k, "positive integers")
            raise InputError("--grid-json", f"{k}: expected {what}")
        grid[k] = v
    return grid


# the topology's own acceptance model is irrelevant here (this records one; its file may not exist yet)
RECORDING = ["models.acceptance.kind=iid"]


def _lookup_ngram(args) -> int:
    if args.lookup_ngram is not None:
        if args.lookup_ngram < 0:
            raise InputError("--lookup-ngram", "must be >= 0")
        return args.lookup_ngram
    if args.topology:
        from testbed.spec.resolve import load_scenario

        return load_scenario(args.topology, RECORDING).spec.models.lookup_ngram
    return 0


def _requests(args, n: int) -> list[tuple[int, int, int]]:
    if args.topology:
        from testbed.spec.resolve import load_scenario
        from testbed.workload import build_workload

        w = build_workload(load_scenario(args.topology, RECORDING))
        tr = w.trace
        return [
            (int(tr.request_id[i]), int(tr.prompt_tokens[i]), int(w.output_tokens[i])) for i in range(min(n, len(tr)))
        ]
    from traces import TraceError, find_trace, load_trace

    try:
        tr = load_trace(str(find_trace(args.trace)), "auto", max_requests=n, duration_s=None)
    except TraceError as e:
        raise InputError(args.trace, str(e)) from None
    return [(int(tr.request_id[i]), int(tr.prompt_tokens[i]), int(tr.output_tokens[i])) for i in range(len(tr))]


CONTEXT_AXES = ("draft_ctx", "draft_prefill_L", "prefill_L", "verify_ctx")


def _clip_grid(grid: dict, max_ctx: int) -> dict:
    """The grid without contexts / lengths above max_ctx (max_ctx itself is added where an axis would be empty)."""
    out = dict(grid)
    for k in CONTEXT_AXES:
        out[k] = [v for v in grid[k] if v <= max_ctx] or [max_ctx]
    return out


def run(args: argparse.Namespace) -> int:
    from nodes import models as M

    grid = parse_grid(args.grid_json) if args.grid_json else GRID_QUICK if args.quick else GRID_FULL
    M.require_torch(args.target)
    M.check_pair(args.draft, args.target)  # paths, deps, memory, tokenizer: before any measurement
    if args.max_ctx:
        grid = _clip_grid(grid, args.max_ctx)
    stem = "hf-" + Path(args.target).name.replace(".", "-")
    out = args.out or (Path(__file__).resolve().parent.parent / "profiles" / f"{stem}.yaml")
    n_rec = args.record if args.record is not None else (4 if args.quick else 24)
    extra = {
        "grid": grid,
        "host": platform.node(),
        "machine": platform.machine(),
        "draft": args.draft,
        "target": args.target,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if not args.skip_timing:
        import torch

        from testbed.calibrate.fit import fit_cost, write_profile
        from testbed.compute import CALIBRATED
        from nodes.backends.hf_bench import Bench

        if args.threads:
            torch.set_num_threads(args.threads)
        extra["threads"] = torch.get_num_threads()
        tm, ttok, _ = M.load_model(args.target)
        dm, _, _ = M.load_model(args.draft)
        extra.update(M.kernel_states())
        b = Bench(tm, dm, ttok, reps=grid["reps"], estimator=args.estimator)
        extra["estimator"] = f"{args.estimator} of {grid['reps']}"
        t0 = time.perf_counter()
        print("timing draft steps ...", file=sys.stderr)
        dsteps = b.draft_steps(grid["draft_ctx"])
        print("timing draft prefill (first draft call) ...", file=sys.stderr)
        dpre = b.draft_prefill(grid["draft_prefill_L"])
        print("timing target prefill ...", file=sys.stderr)
        pre = b.prefill(grid["prefill_B"], grid["prefill_L"])
        print("timing target verify ...", file=sys.stderr)
        ver = b.verify(grid["verify_B"], grid["verify_gamma"], grid["verify_ctx"])
        fits = {
            k: fit_cost(*zip(*[r[:4] for r in rows]))
            for k, rows in (("draft_step", dsteps), ("draft_prefill", dpre), ("prefill", pre), ("verify", ver))
        }
        extra["measurements"] = {"draft_step": dsteps, "draft_prefill": dpre, "prefill": pre, "verify": ver}
        extra["timing_wall_s"] = round(time.perf_counter() - t0, 1)
        write_profile(
            out,
            fits,
            f"{CALIBRATED}{platform.node()} ({extra['threads']} torch threads): draft "
            f"{args.draft}, target {args.target}, hf backend, float32 CPU.",
            extra,
        )
        for k, f in fits.items():
            print(f"{k:10s} " + " ".join(f"{t}={v:.4g}" for t, v in f.coef.items()) + f"  ({f.quality()})")
        print(f"profile written to {out}")
    if n_rec > 0:
        from testbed.acceptance_recorded import save_recorded
        from testbed.calibrate.record import record

        reqs = _requests(args, n_rec)
        print(f"recording acceptance of {len(reqs)} requests ...", file=sys.stderr)
        seqs, summary = record(
            args.draft,
            args.target,
            reqs,
            max_prompt=args.max_prompt,
            max_output=args.max_output,
            lookup_ngram=_lookup_ngram(args),
        )
        summary["requests_from"] = args.topology or args.trace
        path = save_recorded(out.with_suffix(".acceptance.npz"), seqs, summary)
        print(
            f"acceptance rate {summary['acceptance_rate']:.3f} over {summary['positions']} positions; "
            f"sequences in {path}"
        )
        print(json.dumps(summary), file=sys.stderr)
    return 0
