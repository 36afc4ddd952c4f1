"""Parser of the Azure LLM inference traces (2023 and 2024): CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``."""

from __future__ import annotations

import numpy as np

from .formats import AZURE_COLUMNS, read_csv
from .model import ParsedRows


def parse(path: str, skip_bad_rows: bool) -> ParsedRows:
    df, check = read_csv(path, AZURE_COLUMNS, skip_bad_rows)
    ns = check.datetime_col(df["TIMESTAMP"], "TIMESTAMP")
    prompt = check.int_col(df["ContextTokens"], "ContextTokens")
    output = check.int_col(df["GeneratedTokens"], "GeneratedTokens")
    good, skipped = check.finish(skip_bad_rows)
    ns = ns[good]
    origin = int(ns.min()) if ns.size else 0
    return ParsedRows(
        t_s=(ns - origin).astype(np.float64) / 1e9,
        t0_s=0.0,
        prompt_tokens=prompt[good],
        output_tokens=output[good],
        field=None,
        skipped_rows=skipped,
        excluded_rows=0,
    )
