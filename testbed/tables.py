"""The run directory's tables: column names, types and meaning, written identically by both executors.

All times are seconds since the run's start (the trace's first kept request arrives at 0). Rows are built
as tuples in column order (cheap on the hot path) and turned into typed DataFrames here.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from testbed.files import write_parquet

# name -> (dtype, meaning)
REQUEST_COLUMNS: dict[str, tuple[str, str]] = {
    "request_id": ("int64", "trace request id (0.. in arrival order)"),
    "edge": ("string", "draft node the request arrived at"),
    "target": ("string", "target node it was routed to ('' if never routed)"),
    "arrival_s": ("float64", "arrival at the edge"),
    "prefill_sent_s": ("float64", "prompt sent to the target"),
    "first_token_s": ("float64", "first token back at the edge (NaN if never)"),
    "finish_s": ("float64", "last token back at the edge (NaN if not finished)"),
    "prompt_tokens": ("int32", "prompt length from the trace"),
    "output_tokens": ("int32", "output length from the trace (what must be produced)"),
    "tokens_out": ("int32", "tokens produced (== output_tokens when ok)"),
    "rounds": ("int32", "verification rounds"),
    "drafted_tokens": ("int32", "draft tokens sent for verification"),
    "accepted_tokens": ("int32", "draft tokens accepted"),
    "status": ("string", "ok | failed | unfinished"),
}

ROUND_COLUMNS: dict[str, tuple[str, str]] = {
    "request_id": ("int64", "request"),
    "round": ("int32", "round index within the request (0..)"),
    "edge": ("string", "draft node"),
    "target": ("string", "target node"),
    "produced": ("int32", "tokens produced before the round (the round starts at this output position)"),
    "gamma": ("int32", "tokens drafted (after clamping to what is left)"),
    "accepted": ("int32", "draft tokens accepted"),
    "gained": ("int32", "tokens gained = accepted + 1"),
    "draft_start_s": ("float64", "drafting started (after waiting for a draft slot)"),
    "send_s": ("float64", "VERIFY sent by the edge"),
    "target_recv_s": ("float64", "VERIFY received by the target"),
    "batch_start_s": ("float64", "verify batch started on the target"),
    "batch_end_s": ("float64", "verify batch finished"),
    "recv_s": ("float64", "VERIFY_RESULT received by the edge"),
    "batch_size": ("int32", "requests in the verify batch"),
    "queue_depth": ("int32", "target queue depth reported with the result"),
}

BATCH_COLUMNS: dict[str, tuple[str, str]] = {
    "target": ("string", "target node"),
    "kind": ("string", "prefill | verify"),
    "start_s": ("float64", "batch started"),
    "end_s": ("float64", "batch finished"),
    "size": ("int32", "requests in the batch"),
    "tokens": ("int32", "tokens processed (prompt tokens, or sum of gamma + 1)"),
}

EVENT_COLUMNS: dict[str, tuple[str, str]] = {
    "t_s": ("float64", "when it was scheduled (the spec's schedule), or when it happened (detections, re-routes)"),
    "applied_s": ("float64", "when it took effect (emulator: measured after the change was made)"),
    "lateness_ms": ("float64", "applied_s - t_s in ms (0 in the simulator)"),
    "kind": (
        "string",
        "link_params | link_down | link_up | crash | restart | target_dead | target_alive | reroute | fail",
    ),
    "link": ("string", "the link 'a-b' (link kinds), else ''"),
    "node": ("string", "the node (crash, restart; the draft for detections and re-routes), else ''"),
    "detail": ("string", "parameters in force, the cause, the target, the request"),
}

TABLES = {"requests": REQUEST_COLUMNS, "rounds": ROUND_COLUMNS, "batches": BATCH_COLUMNS}


# Row builders: every executor builds its rows through these, by column name (their parameters are the
# columns, in order; a test checks it), so no site depends on the column order.
def request_row(
    *,
    request_id: int,
    edge: str | int,
    target: str | int,
    arrival_s: float,
    prefill_sent_s: float,
    first_token_s: float,
    finish_s: float,
    prompt_tokens: int,
    output_tokens: int,
    tokens_out: int,
    rounds: int,
    drafted_tokens: int,
    accepted_tokens: int,
    status: str,
) -> tuple:
    return (
        request_id,
        edge,
        target,
        arrival_s,
        prefill_sent_s,
        first_token_s,
        finish_s,
        prompt_tokens,
        output_tokens,
        tokens_out,
        rounds,
        drafted_tokens,
        accepted_tokens,
        status,
    )


def round_row(
    *,
    request_id: int,
    round: int,
    edge: str | int,
    target: str | int,
    produced: int,
    gamma: int,
    accepted: int,
    draft_start_s: float,
    send_s: float,
    target_recv_s: float,
    batch_start_s: float,
    batch_end_s: float,
    recv_s: float,
    batch_size: int,
    queue_depth: int,
) -> tuple:
    """(gained = accepted + 1 is derived.)"""
    return (
        request_id,
        round,
        edge,
        target,
        produced,
        gamma,
        accepted,
        accepted + 1,
        draft_start_s,
        send_s,
        target_recv_s,
        batch_start_s,
        batch_end_s,
        recv_s,
        batch_size,
        queue_depth,
    )


def batch_row(*, target: str | int, kind: str | int, start_s: float, end_s: float, size: int, tokens: int) -> tuple:
    return (target, kind, start_s, end_s, size, tokens)


def unstarted_request_row(
    request_id: int, edge: str, arrival_s: float, prompt_tokens: int, output_tokens: int, status: str
) -> tuple:
    """A request that never started (not arrived before the end, or its draft left no table)."""
    nan = float("nan")
    return request_row(
        request_id=request_id,
        edge=edge,
        target="",
        arrival_s=arrival_s,
        prefill_sent_s=nan,
        first_token_s=nan,
        finish_s=nan,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        tokens_out=0,
        rounds=0,
        drafted_tokens=0,
        accepted_tokens=0,
        status=status,
    )


def write_events(out: Path, df: pd.DataFrame) -> None:
    """`events.parquet`: what the schedule changed and when (both executors; absent when nothing is scheduled)."""
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "events.parquet", df)


def frame(
    columns: dict[str, tuple[str, str]], rows: list[tuple], codes: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """A typed DataFrame from row tuples in column order.

    With `codes`, the named string columns hold integer codes into the given name lists and every value of
    every row is a number: the rows are then converted in one vectorised step (the simulator's hot output).
    """
    names = list(columns)
    data: dict[str, object]
    if not rows:
        data = {n: [] for n in names}
    elif codes:
        width = len(names)  # the row builders give every row this width
        if len(rows[0]) != width:
            raise ValueError(f"rows of {len(rows[0])} values for {width} columns {names}")
        flat = itertools.chain.from_iterable(rows)  # fromiter: ~30 % faster than np.array on a list of tuples
        arr = np.fromiter(flat, dtype=np.float64, count=len(rows) * width).reshape(-1, width)
        data = {}
        for k, n in enumerate(names):
            col = arr[:, k]
            if n in codes:
                idx = pa.array(col.astype(np.int32))
                strings = pa.DictionaryArray.from_arrays(idx, pa.array(codes[n], pa.string())).cast(pa.string())
                data[n] = pd.array(strings, dtype=pd.StringDtype("pyarrow"))
            else:
                data[n] = col.astype(columns[n][0])
    else:
        data = {n: np.asarray(c) for n, c in zip(names, zip(*rows))}
    df = pd.DataFrame(data, columns=names)
    return df.astype({n: t for n, (t, _) in columns.items()})


class ParquetSink:
    """A table streamed to its parquet file in chunks of rows (one row group each), so a long run never holds
    all its rows. The file is written under a hidden temporary name and renamed by `close` (readers never see
    a partial table); `abort` removes it. Read back, it equals `frame(columns, all rows, codes)`."""

    def __init__(self, path: Path, columns: dict[str, tuple[str, str]], codes: dict[str, list[str]] | None = None):
        import pyarrow.parquet as pq

        self._pq = pq
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.columns = columns
        self.codes = codes
        self.rows = 0
        self._writer = None
        self._schema: pa.Schema | None = None

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        table = pa.Table.from_pandas(frame(self.columns, rows, self.codes), schema=self._schema, preserve_index=False)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema
            self._writer = self._pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table)
        self.rows += len(rows)

    def close(self) -> None:
        if self._writer is None:  # no rows: the empty table
            self.path.parent.mkdir(parents=True, exist_ok=True)
            frame(self.columns, []).to_parquet(self.tmp, index=False)
        else:
            self._writer.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def check_schema(df: pd.DataFrame, table: str, path: str = "") -> None:
    cols = list(TABLES[table])
    if list(df.columns) != cols:
        raise ValueError(f"{path or table}: columns {list(df.columns)} differ from the {table} schema {cols}")


def write_tables(out: Path, requests: pd.DataFrame, rounds: pd.DataFrame, batches: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("requests", requests), ("rounds", rounds), ("batches", batches)):
        check_schema(df, name)
        write_parquet(out / f"{name}.parquet", df)


def read_tables(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    out = []
    for name in ("requests", "rounds", "batches"):
        p = d / f"{name}.parquet"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (is {d} a run's sim/ or emu/ directory?)")
        df = pd.read_parquet(p)
        check_schema(df, name, str(p))
        out.append(df)
    return out[0], out[1], out[2]


READ_BATCH_ROWS = 1 << 17  # numeric columns: ~1 MB each


def record_batches(f, columns: list[str], batch_rows: int = READ_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """A parquet file's (pyarrow.parquet.ParquetFile) rows in batches of about `batch_rows`, only `columns`: small
    row groups (a streamed simulation writes 65,536 rows each) are read together, so the cost per batch is paid per
    batch, not per row group (the simulator's summary pass and the analysis scans)."""
    pending: list[int] = []
    rows = 0

    def flush() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        if pending:
            t = f.read_row_groups(pending, columns=columns).unify_dictionaries().combine_chunks()
            pending.clear()
            rows = 0
            yield from t.to_batches()

    for i in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(i).num_rows
        if n >= batch_rows:
            yield from flush()
            yield from f.iter_batches(batch_size=batch_rows, row_groups=[i], columns=columns)
            continue
        pending.append(i)
        rows += n
        if rows >= batch_rows:
            yield from flush()
    yield from flush()
