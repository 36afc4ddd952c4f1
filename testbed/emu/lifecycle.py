"""Explicit build / teardown wrapped in a context manager, for everything the emulator builds (networks, runtimes):
`with thing:` builds, and tears down again if building failed part-way; leaving the block tears down (also on
errors, Ctrl-C and SIGTERM turned into SystemExit). `teardown()` must not raise and must be safe to call twice."""

from __future__ import annotations

from typing import Self


class Built:
    def build(self) -> None:
        """Create what this object owns."""

    def teardown(self) -> None:
        """Remove everything build() created, in reverse order; never raises; safe to call twice."""

    def __enter__(self) -> Self:
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()
