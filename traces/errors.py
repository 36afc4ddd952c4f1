"""The one exception type of the trace package: :class:`TraceError`."""

from __future__ import annotations


class TraceError(ValueError):
    """A trace that cannot be found, read or used.

    The message is always one line and starts with ``'path:line: '`` (1-based line in the file), or with
    ``'path: '`` when no single line is to blame; for generated traces ``path`` is ``'synthetic'``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))
