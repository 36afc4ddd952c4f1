"""Parser of BurstGPT: CSV ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``.

Rows with ``Response tokens`` = 0 are failed requests: they are excluded and counted in ``excluded_rows``.
"""

from __future__ import annotations

import numpy as np

from .formats import BURSTGPT_COLUMNS, read_csv
from .model import ParsedRows


def parse(path: str, skip_bad_rows: bool) -> ParsedRows:
    df, check = read_csv(path, BURSTGPT_COLUMNS, skip_bad_rows)
    t = check.float_col(df["Timestamp"], "Timestamp")
    model = check.str_col(df["Model"], "Model")
    request = check.int_col(df["Request tokens"], "Request tokens", min_value=0)
    response = check.int_col(df["Response tokens"], "Response tokens", min_value=0)
    failed = response == 0
    # A failed request may report 0 request tokens; a served one must have a prompt.
    check.flag(
        (request == 0) & ~failed,
        lambda i: f"column 'Request tokens': {df['Request tokens'].iloc[i]!r} is not a positive integer",
    )
    good, skipped = check.finish(skip_bad_rows)
    served = good & ~failed
    return ParsedRows(
        t_s=t[served],
        t0_s=float(t[good].min()) if good.any() else 0.0,
        prompt_tokens=request[served],
        output_tokens=response[served],
        field=np.asarray(model[served], dtype=object),
        skipped_rows=skipped,
        excluded_rows=int((good & failed).sum()),
    )
