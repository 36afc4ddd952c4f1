"""Progress output that is not a terminal: plain lines, a bounded number of them, no carriage returns."""

from __future__ import annotations

import io

from testbed.progress import JobProgress


def test_not_a_terminal_writes_periodic_lines():
    out = io.StringIO()
    with JobProgress("runs", 1000, stream=out, every_s=3600) as p:
        for i in range(1, 1001):
            p.update(i, failed=i // 500)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert lines[0].startswith("runs: 0/1000 (0 %)")
    assert 10 <= len(lines) <= 12  # the start, one per 10 %, the end (not 1000 updates)
    assert lines[-1].startswith("runs: 1000/1000 (100 %), 2 failed")


def test_disabled_and_total_learned_late():
    out = io.StringIO()
    with JobProgress("x", 5, enabled=False, stream=out) as p:
        p.update(3)
    assert out.getvalue() == ""
    out = io.StringIO()
    with JobProgress("labelled", 0, stream=out) as p:
        p.update(2, total=4)
        p.update(4, total=4)
    assert out.getvalue().splitlines()[-1].startswith("labelled: 4/4 (100 %)")
