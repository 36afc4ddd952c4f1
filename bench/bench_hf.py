"""Benchmark of the hf backend with the shipped pair (SmolLM2-135M-Instruct target, its int8 draft).

    nice -n 19 .venv/bin/python bench/bench_hf.py [--quick] [--json OUT]

Reports (ratios measured in one run; absolute times are this machine's, noisy when shared):
- model load time (cached directory; the first, dequantising load is reported when it happens here);
- target verify throughput (tokens/s, tokens = B*(gamma+1)) at batch 1, 2, 4, 8 vs verifying the same
  requests one by one, and the batch-8 ratio (goal >= 2x);
- draft tokens/s (one request, context 512);
- greedy acceptance rate of the draft on real prompts with Azure-conv lengths (testbed.calibrate.record);
- end-to-end speedup of DSD over autoregressive decoding at the target, per output token, at 5, 20, 50 ms
  one-way delay, from the measured step times and acceptance with the shared formula
  (testbed.acceptance.expected_tokens_per_round):
      AR   per token = t_verify(gamma = 0)                       (a decode step; tokens stream back, no RTT)
      DSD  per token = (gamma * t_draft + 2 * delay + t_verify(gamma)) / E[tokens per round](alpha, gamma)
  reported for gamma = 4 and for the best gamma in 1..8.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--requests", type=int, default=12, help="requests for the acceptance measurement")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--lookup", type=int, default=0, help="prompt lookup of N tokens before the draft model")
    ap.add_argument(
        "--draft",
        default=None,
        help="draft model (default: the shipped int8 draft; smollm2-135m-tiny: the distilled one)",
    )
    args = ap.parse_args()

    from nodes import models as M
    from testbed.acceptance import expected_tokens_per_round
    from nodes.backends.hf_bench import Bench
    from testbed.calibrate.record import record

    res: dict = {}
    first = not (M.cache_root() / M.TARGET_NAME / "config.json").is_file()
    t = time.perf_counter()
    tm, ttok, _ = M.load_model(M.TARGET_NAME)
    res["target_load_s"] = round(time.perf_counter() - t, 2)
    res["target_load_was_first"] = first
    t = time.perf_counter()
    draft = args.draft or M.DRAFT_NAME
    dm, _, _ = M.load_model(draft)
    res["draft_load_s"] = round(time.perf_counter() - t, 2)
    reps = 1 if args.quick else 3
    b = Bench(tm, dm, ttok, reps=reps)

    batches = [1, 2, 4, 8]
    rows = b.verify(batches, [args.gamma], [args.ctx], one_by_one=True)
    res["verify"] = []
    for B, tok, ctx, ms, ms1 in rows:
        res["verify"].append(
            {
                "batch": B,
                "tokens": tok,
                "batched_ms": round(ms, 1),
                "one_by_one_ms": round(ms1, 1),
                "batched_tok_s": round(tok / ms * 1e3, 1),
                "one_by_one_tok_s": round(tok / ms1 * 1e3, 1),
                "ratio": round(ms1 / ms, 2),
            }
        )
    res["batch8_ratio"] = res["verify"][-1]["ratio"]
    gam = [0, 1, 2, 4, 8]
    tv = {g: r[3] for g, r in zip(gam, b.verify([1], gam, [args.ctx]))}
    res["verify_b1_ms_by_gamma"] = {g: round(v, 1) for g, v in tv.items()}
    step = b.draft_steps([args.ctx], gamma=args.gamma)[0][3]
    res["draft_step_ms"] = round(step, 1)
    res["draft_tok_s"] = round(1e3 / step, 1)

    from traces import find_trace, load_trace

    tr = load_trace(
        str(find_trace("azure-conv")), "auto", max_requests=args.requests if not args.quick else 4, duration_s=None
    )
    reqs = [(int(tr.request_id[i]), int(tr.prompt_tokens[i]), int(tr.output_tokens[i])) for i in range(len(tr))]
    _, summ = record(
        draft, M.TARGET_NAME, reqs, max_prompt=1024, max_output=64 if not args.quick else 24, lookup_ngram=args.lookup
    )
    alpha = summ["acceptance_rate"]
    res["acceptance"] = {k: summ[k] for k in ("requests", "positions", "acceptance_rate", "max_prompt", "max_output")}

    def t_verify(g: int) -> float:  # piecewise-linear in gamma between the measured points
        if g in tv:
            return tv[g]
        lo = max(x for x in gam if x < g)
        hi = min(x for x in gam if x > g)
        return tv[lo] + (tv[hi] - tv[lo]) * (g - lo) / (hi - lo)

    ar = tv[0]
    res["speedup"] = {}
    for delay in (5, 20, 50):
        per = {g: (g * step + 2 * delay + t_verify(g)) / expected_tokens_per_round(alpha, g) for g in range(1, 9)}
        best = min(per, key=per.get)
        res["speedup"][f"{delay}ms"] = {
            "ar_ms_per_token": round(ar, 1),
            f"dsd_gamma{args.gamma}_ms_per_token": round(per[args.gamma], 1),
            f"speedup_gamma{args.gamma}": round(ar / per[args.gamma], 2),
            "best_gamma": best,
            "speedup_best": round(ar / per[best], 2),
        }
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
