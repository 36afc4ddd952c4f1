"""Parser of the project's native JSONL, one object per line:
``{"t": s, "prompt_tokens": n, "output_tokens": m, "id"?: .., "field"?: ".."}``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .formats import read_jsonl
from .model import ParsedRows

KEYS = {"t": pa.float64(), "prompt_tokens": pa.float64(), "output_tokens": pa.float64(), "field": pa.string()}


def parse(path: str, skip_bad_rows: bool) -> ParsedRows:
    df, check = read_jsonl(path, KEYS)
    t = check.float_col(df["t"], "t")
    prompt = check.int_col(df["prompt_tokens"], "prompt_tokens")
    output = check.int_col(df["output_tokens"], "output_tokens")
    has_field = bool(df["field"].notna().any())
    field = check.str_col(df["field"], "field") if has_field else None  # all rows or none
    good, skipped = check.finish(skip_bad_rows)
    return ParsedRows(
        t_s=t[good],
        t0_s=float(t[good].min()) if good.any() else 0.0,
        prompt_tokens=prompt[good],
        output_tokens=output[good],
        field=None if field is None else np.asarray(field[good], dtype=object),
        skipped_rows=skipped,
        excluded_rows=0,
    )
