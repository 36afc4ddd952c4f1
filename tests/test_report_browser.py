"""report.html in a real browser: headless Chromium (Debian's `chromium`) renders it with its plots and tables.

Skipped, with the reason, where no Chromium is installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds a report and renders it in a headless browser

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
N_FIGURES = 5


def find_browser() -> str | None:
    for b in BROWSERS:
        p = shutil.which(b)
        if p:
            return p
    return None


def chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def browser() -> str:
    b = find_browser()
    if b is None:
        pytest.skip(
            "no Chromium found (looked for: " + ", ".join(BROWSERS) + "); install Debian's: apt-get install -y chromium"
        )
    return b


@pytest.fixture(scope="module")
def report(browser, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("browser") / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed",
            "sim",
            "topologies/star-4edge.yaml",
            "--out",
            str(run),
            "--quiet",
            "--set",
            "workload.trace=synthetic",
            "--set",
            "workload.synthetic.n_requests=40",
            "--set",
            "workload.synthetic.rate_rps=4",
            "--set",
            "workload.duration_s=null",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    shutil.copytree(run / "sim", run / "emu")  # an emulated side with the emulator's schema
    from analysis.report import build

    return build(run)["report"]


def test_report_renders_in_chromium(browser, report, tmp_path):
    shot = tmp_path / "report.png"
    r = chromium(
        browser, tmp_path, f"--screenshot={shot}", "--window-size=1400,3000", "--hide-scrollbars", report.as_uri()
    )
    assert shot.is_file(), f"no screenshot (exit {r.returncode}): {r.stderr[-2000:]}"
    assert shot.stat().st_size > 50_000, f"screenshot only {shot.stat().st_size} bytes: blank page?"
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (3000, 1400)
    non_white = (img.min(axis=2) < 0.9).mean()
    assert non_white > 0.03, f"only {non_white:.1%} of the screenshot is not white"
    assert len(np.unique((img[::4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # plots, not flat boxes


def test_report_dom_has_decoded_plots_and_tables(browser, report, tmp_path):
    # A copy with a probe that records, once loaded, how many images the browser actually decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(
        report.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => { const n = [...document.images].filter("
            "i => i.complete && i.naturalWidth > 0).length; document.body.setAttribute('data-decoded', String(n)); "
            "});</script></body>",
        )
    )
    r = chromium(browser, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    dom = r.stdout
    assert r.returncode == 0 and "<body" in dom, f"exit {r.returncode}: {r.stderr[-2000:]}"
    imgs = re.findall(r"<img[^>]*src=\"data:image/png;base64,[A-Za-z0-9+/=]{1000,}\"", dom)
    assert len(imgs) == N_FIGURES, f"{len(imgs)} embedded PNG <img> tags in the DOM"
    m = re.search(r"data-decoded=\"(\d+)\"", dom)
    assert m and int(m.group(1)) == N_FIGURES, "the browser did not decode every plot"
    assert 'id="comparison-table"' in dom and "TTFT mean" in dom
    assert 'id="edges-table"' in dom and 'id="targets-table"' in dom
