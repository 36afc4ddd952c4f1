"""Shared reading machinery of the file formats: CSV / JSONL readers, vectorised per-column validation with
1-based line numbers, and format detection from extension and header."""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from .errors import TraceError

INT32_MAX = 2**31 - 1

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
NATIVE_KEYS = ("t", "prompt_tokens", "output_tokens")


class RowChecker:
    """Validates whole columns at once, remembers which rows are bad and the first problem in file order."""

    def __init__(self, path: str, lines: np.ndarray) -> None:
        self.path = path
        self.lines = lines  # 1-based file line of each row
        self.bad = np.zeros(lines.shape[0], dtype=bool)
        self.extra_skipped = 0  # rows dropped by the reader itself (e.g. wrong field count)
        self._first: tuple[int, str] | None = None

    def flag(self, mask: np.ndarray, describe: Callable[[int], str]) -> None:
        """Mark rows in ``mask`` bad; ``describe(i)`` gives the message for row i (only called for one row)."""
        if not mask.any():
            return
        self.bad |= mask
        i = int(np.flatnonzero(mask)[0])
        line = int(self.lines[i])
        if self._first is None or line < self._first[0]:
            self._first = (line, describe(i))

    def int_col(self, s: pd.Series, col: str, *, min_value: int = 1) -> np.ndarray:
        num = _to_float(s)
        present = s.notna().to_numpy()
        finite = np.isfinite(num)
        integral = finite & (num == np.floor(np.where(finite, num, 0.0)))
        ok = integral & (num >= min_value) & (num <= INT32_MAX)

        def describe(i: int) -> str:
            if not present[i]:
                return f"column {col!r}: missing value"
            text = _text(s.iloc[i])
            if not integral[i]:
                return f"column {col!r}: {text!r} is not an integer"
            if num[i] < min_value:
                kind = "a positive integer" if min_value == 1 else f"an integer >= {min_value}"
                return f"column {col!r}: {text!r} is not {kind}"
            return f"column {col!r}: {text!r} is too large"

        self.flag(~ok, describe)
        return np.where(ok, num, min_value).astype(np.int64)

    def float_col(self, s: pd.Series, col: str) -> np.ndarray:
        num = _to_float(s)
        present = s.notna().to_numpy()
        ok = np.isfinite(num)

        def describe(i: int) -> str:
            if not present[i]:
                return f"column {col!r}: missing value"
            return f"column {col!r}: {_text(s.iloc[i])!r} is not a number"

        self.flag(~ok, describe)
        return np.where(ok, num, 0.0)

    def datetime_col(self, s: pd.Series, col: str) -> np.ndarray:
        """Parse date-time text (any fractional precision, optional timezone; naive = UTC) to int64 ns."""
        parsed = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
        missing = parsed.isna().to_numpy() & s.notna().to_numpy()
        if missing.any():
            retry = pd.to_datetime(s[missing], format="mixed", utc=True, errors="coerce")
            parsed = parsed.copy()
            parsed[missing] = retry
        ok = parsed.notna().to_numpy()
        present = s.notna().to_numpy()

        def describe(i: int) -> str:
            if not present[i]:
                return f"column {col!r}: missing value"
            return f"column {col!r}: {_text(s.iloc[i])!r} is not a date-time"

        self.flag(~ok, describe)
        ns = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)
        return np.where(ok, ns, 0)

    def str_col(self, s: pd.Series, col: str) -> np.ndarray:
        values = s.to_numpy(dtype=object)
        ok = np.fromiter((isinstance(v, str) and v.strip() != "" for v in values), dtype=bool, count=len(values))

        def describe(i: int) -> str:
            v = values[i]
            if (isinstance(v, str) and not v.strip()) or (not isinstance(v, str) and pd.isna(v)):
                return f"column {col!r}: missing value"
            return f"column {col!r}: {_text(v)!r} is not a string"

        self.flag(~ok, describe)
        return values

    def finish(self, skip_bad_rows: bool) -> tuple[np.ndarray, int]:
        """Raise the first problem, or (with skip_bad_rows) return the mask of good rows and the skipped count."""
        if self._first is not None and not skip_bad_rows:
            line, message = self._first
            raise TraceError(f"{self.path}:{line}: {message}")
        return ~self.bad, int(self.bad.sum()) + self.extra_skipped


def _to_float(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def read_bytes(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def first_line(path: str) -> str:
    """The first non-blank line of the file (BOM stripped), or '' for an empty file."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return line.strip()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return ""


def csv_header(path: str) -> list[str]:
    return [name.strip().strip('"') for name in first_line(path).split(",")]


def read_csv(path: str, required: Sequence[str], skip_bad_rows: bool) -> tuple[pd.DataFrame, RowChecker]:
    """Read the ``required`` columns as text; rows with a wrong field count are errors (or skipped)."""
    header = csv_header(path)
    for col in required:
        if col not in header:
            raise TraceError(f"{path}:1: missing column {col!r} (header: {','.join(header)})")
    options = dict(dtype=str, skip_blank_lines=False, index_col=False, encoding="utf-8-sig")
    dropped: list[list[str]] = []
    try:
        df = pd.read_csv(path, **options)
    except pd.errors.ParserError as exc:
        if not skip_bad_rows:
            raise TraceError(_parser_error(path, str(exc))) from exc
        df = pd.read_csv(path, engine="python", on_bad_lines=lambda fields: dropped.append(fields), **options)
    except (OSError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise TraceError(f"{path}: cannot read as CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    df = df.loc[:, list(required)]
    lines = np.arange(len(df), dtype=np.int64) + 2  # header is line 1 (exact unless rows were dropped above)
    blank = df.isna().all(axis=1).to_numpy()
    if blank.any():
        df, lines = df.loc[~blank].reset_index(drop=True), lines[~blank]
    checker = RowChecker(path, lines)
    checker.extra_skipped = len(dropped)
    return df, checker


def _parser_error(path: str, message: str) -> str:
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if m:
        return f"{path}:{m.group(2)}: expected {m.group(1)} fields, saw {m.group(3)}"
    m = re.search(r"line (\d+)", message)
    detail = message.replace("Error tokenizing data. C error: ", "").strip()
    return f"{path}:{m.group(1)}: {detail}" if m else f"{path}: {detail}"


def read_jsonl(path: str, keys: dict[str, pa.DataType]) -> tuple[pd.DataFrame, RowChecker]:
    """Read the given keys of each non-blank line; fast (pyarrow) for clean files, exact line numbers always."""
    data = read_bytes(path)
    raw_lines = data.split(b"\n")
    numbered = [(i + 1, raw) for i, raw in enumerate(raw_lines) if raw.strip()]
    lines = np.fromiter((n for n, _ in numbered), dtype=np.int64, count=len(numbered))
    schema = pa.schema(list(keys.items()))
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=options)
        if table.num_rows == len(numbered):
            return table.to_pandas(), RowChecker(path, lines)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Slow path, only for files with a problem somewhere: find it line by line.
    columns: dict[str, list[object]] = {k: [] for k in keys}
    invalid = np.zeros(len(numbered), dtype=bool)
    reasons: dict[int, str] = {}
    for k, (_, raw) in enumerate(numbered):
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            obj, reasons[k] = None, f"invalid JSON: {exc}"
        if not isinstance(obj, dict):
            reasons.setdefault(k, "not a JSON object")
            invalid[k] = True
            obj = {}
        for key in keys:
            columns[key].append(_json_scalar(obj.get(key)))
    df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})
    checker = RowChecker(path, lines)
    checker.flag(invalid, lambda i: reasons[i])
    return df, checker


def _json_scalar(value: object) -> object:
    if value is None or isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return json.dumps(value)  # lists, objects, booleans: kept as text so they fail validation with a message


def detect_format(path: str) -> str:
    """Pick the format of a file from its extension and first line (header or first JSON object)."""
    name = path.lower().removesuffix(".gz")
    head = first_line(path)
    if not head:
        raise TraceError(f"{path}: empty file")
    if name.endswith((".jsonl", ".json", ".ndjson")) or (not name.endswith(".csv") and head.startswith("{")):
        try:
            obj = json.loads(head)
        except ValueError as exc:
            raise TraceError(f"{path}:1: invalid JSON: {exc}") from exc
        if isinstance(obj, dict) and "input_length" in obj:
            return "mooncake"
        if isinstance(obj, dict) and "prompt_tokens" in obj:
            return "native"
        keys = ",".join(obj) if isinstance(obj, dict) else type(obj).__name__
        raise TraceError(f"{path}:1: unrecognised JSONL trace (keys: {keys}); expected Mooncake or native keys")
    header = set(csv_header(path))
    if set(AZURE_COLUMNS) <= header:
        return "azure"
    if set(BURSTGPT_COLUMNS) <= header:
        return "burstgpt"
    raise TraceError(f"{path}:1: unrecognised CSV header {head!r}; expected Azure or BurstGPT columns")
