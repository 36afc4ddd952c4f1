"""Link-capacity traces in the Mahimahi packet-delivery format (FORMATS.md, "Network traces").

Each line is one integer, a time in milliseconds from the start of the trace: one opportunity to deliver
one 1500-byte packet across the link at that millisecond (a time repeated k times: k packets). Times never
decrease; the trace is replayed in a loop whose period is its last time (as Mahimahi's link shell does).
The files are not part of the repository: a name is looked up in $DSD_NET_TRACES_DIR, then
`<project>/../shared/net-traces/`, then `<project>/traces/data/`; any path works too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import TraceError
from .locate import project_root

ENV_VAR = "DSD_NET_TRACES_DIR"
OPPORTUNITY_BYTES = 1500  # bytes one delivery opportunity may carry (Mahimahi: one MTU-sized packet)
DOWNLOAD_HINT = (
    "get the cellular traces from the traces/ folder of the Mahimahi repository "
    f"(https://github.com/ravinet/mahimahi) and set {ENV_VAR} to the folder holding them"
)


def net_trace_dirs() -> list[Path]:
    dirs = [Path(d).expanduser() for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]
    root = project_root()
    return dirs + [root.parent / "shared" / "net-traces", root / "traces" / "data"]


def find_net_trace(name_or_path: str, relative_to: Path | None = None) -> Path:
    """An existing path (as given, or relative to `relative_to`), else the name in :func:`net_trace_dirs`."""
    given = Path(name_or_path).expanduser()
    if given.is_file():
        return given.resolve()
    if relative_to is not None and not given.is_absolute() and (relative_to / given).is_file():
        return (relative_to / given).resolve()
    for d in net_trace_dirs():
        if (d / name_or_path).is_file():
            return (d / name_or_path).resolve()
    searched = ", ".join(str(d) for d in net_trace_dirs())
    raise TraceError(f"{name_or_path}: network trace not found (not a file; searched: {searched}); {DOWNLOAD_HINT}")


def load_mahimahi(path: str | os.PathLike[str]) -> np.ndarray:
    """The delivery-opportunity times (int64 ms, non-decreasing, last > 0) of a Mahimahi trace file.
    TraceError 'path:line: ...' for a malformed line."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot read network trace: {getattr(e, 'strerror', None) or e}") from None
    times: list[int] = []
    prev = 0
    for i, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s:
            continue
        try:
            t = int(s)
        except ValueError:
            raise TraceError(
                f"{path}:{i}: {s[:40]!r} is not a whole number of milliseconds (Mahimahi trace: one integer per line)"
            ) from None
        if t < 0:
            raise TraceError(f"{path}:{i}: negative time {t} ms")
        if t < prev:
            raise TraceError(f"{path}:{i}: time {t} ms is before the previous line's {prev} ms (times never decrease)")
        times.append(t)
        prev = t
    if not times:
        raise TraceError(f"{path}:1: empty network trace (no delivery opportunities)")
    if times[-1] <= 0:
        raise TraceError(f"{path}:{len(text.splitlines())}: the last time must be > 0 ms (it is the loop period)")
    return np.asarray(times, dtype=np.int64)


def mean_capacity_mbps(times: np.ndarray) -> float:
    """Mean capacity of a looped trace: opportunities x 1500 bytes per period."""
    return len(times) * OPPORTUNITY_BYTES * 8 / (int(times[-1]) / 1e3) / 1e6
