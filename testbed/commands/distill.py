"""Distil a small draft from the target's own greedy outputs, on CPU, offline (issue 16; testbed/distill.py).

    python -m testbed distill [--prompts N] [--epochs E] [--hidden H --layers L] [--out DIR] [--threads T]

Defaults build the shipped distilled draft `smollm2-135m-tiny` into the model cache (`make draft`; about an hour
on 2 cores: ~30 min of teacher decoding, cached and resumable, then training). Select it with
`models.draft: smollm2-135m-tiny` (topologies/hf-tiny-pair.yaml). Settings, data sizes, losses and the
held-out agreement land in the model directory's distill.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields, replace
from pathlib import Path

from testbed.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from testbed.distill import DistillConfig, DraftArch

    for f in fields(DistillConfig):
        if f.name == "arch":
            continue
        p.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default, help=f.metadata["help"]
        )
    for f in fields(DraftArch):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            help="student " + f.metadata["help"],
        )
    p.add_argument("--out", type=Path, default=None, help="model directory to write (default: the model cache/NAME)")
    p.add_argument("--work", type=Path, default=None, help="teacher-output cache (default: the model cache/distill)")
    p.add_argument("--force", action="store_true", help="train again even if OUT was built with these settings")


def run(args: argparse.Namespace) -> int:
    from testbed.distill import DistillConfig, DraftArch, distill
    from testbed.files import model_cache_dir

    arch = DraftArch(**{f.name: getattr(args, f.name) for f in fields(DraftArch)})
    cfg = replace(
        DistillConfig(**{f.name: getattr(args, f.name) for f in fields(DistillConfig) if f.name != "arch"}), arch=arch
    )
    for name in ("prompts", "output_tokens", "teacher_batch", "head_vocab", "batch", "prompt_min"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
    if cfg.prompt_max < cfg.prompt_min:
        raise InputError("--prompt-max", f"must be >= --prompt-min ({cfg.prompt_min})")
    if not 0 < cfg.holdout < 1:
        raise InputError("--holdout", "must be in (0, 1)")
    if arch.hidden % arch.heads or arch.heads % arch.kv_heads:
        raise InputError("--hidden", "hidden must be a multiple of heads, heads a multiple of kv-heads")
    out = args.out or (model_cache_dir() / cfg.name)
    work = args.work or (model_cache_dir() / "distill")
    done = out / "distill.json"
    if not args.force and done.is_file():
        try:
            same = json.loads(done.read_text()).get("config") == json.loads(json.dumps(asdict(cfg)))
        except ValueError:
            same = False
        if same:
            print(f"distill: {out} is already built with these settings (--force trains again)")
            return 0
    distill(cfg, work, out)
    return 0
