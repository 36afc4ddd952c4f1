"""Parser of the Mooncake (FAST'25) traces: JSONL ``{"timestamp": ms, "input_length": n, "output_length": m, ...}``."""

from __future__ import annotations

import pyarrow as pa

from .formats import read_jsonl
from .model import ParsedRows

KEYS = {"timestamp": pa.float64(), "input_length": pa.float64(), "output_length": pa.float64()}


def parse(path: str, skip_bad_rows: bool) -> ParsedRows:
    df, check = read_jsonl(path, KEYS)
    t_ms = check.float_col(df["timestamp"], "timestamp")
    prompt = check.int_col(df["input_length"], "input_length")
    output = check.int_col(df["output_length"], "output_length")
    good, skipped = check.finish(skip_bad_rows)
    t = t_ms[good] / 1000.0
    return ParsedRows(
        t_s=t,
        t0_s=float(t.min()) if t.size else 0.0,
        prompt_tokens=prompt[good],
        output_tokens=output[good],
        field=None,
        skipped_rows=skipped,
        excluded_rows=0,
    )
