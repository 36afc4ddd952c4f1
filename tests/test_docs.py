"""The README and the design document link only inside the repository, to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", ["README.md", "docs/DESIGN.md"])
def test_links_stay_inside_the_repository(doc):
    path = ROOT / doc
    bad = []
    for target in LINK.findall(path.read_text()):
        if target.startswith("#"):
            continue
        local = (path.parent / target.split("#")[0]).resolve()
        if "://" in target or not local.is_relative_to(ROOT) or not local.exists():
            bad.append(target)
    assert not bad, f"{doc}: links outside the repository or to missing files: {bad}"
