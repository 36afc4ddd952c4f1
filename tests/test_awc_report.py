"""The AWC emulation validation report (analysis.awc_report) on a synthetic result.json: no emulation runs."""

from __future__ import annotations

import json

import pytest

from analysis import awc_report


def _runs(gains: dict[tuple[str, str, str], list[float]], base: float = 100.0) -> list[dict]:
    """Runs whose throughput is base * (1 + gain / 100) for (scenario, policy, executor), one value per seed;
    the baseline static:4 is `base` for every seed and executor."""
    runs = []
    cells = {c for c, _p, _e in gains}
    n = len(next(iter(gains.values())))
    for c in sorted(cells):
        for seed in range(1, n + 1):
            for ex in ("sim", "emu"):
                runs.append(
                    {
                        "cell": c,
                        "load": "saturating",
                        "draft": "slow",
                        "rtt_ms": 5,
                        "alpha": 0.8,
                        "policy": "static:4",
                        "seed": seed,
                        "executor": ex,
                        "output_token_throughput_tps": base,
                        "goodput_rps": 2.0,
                        "tpot_ms": 50.0,
                        "mean_gamma": 4.0,
                        "error": None,
                    }
                )
    for (c, p, ex), gs in gains.items():
        for seed, g in enumerate(gs, start=1):
            runs.append(
                {
                    "cell": c,
                    "load": "saturating",
                    "draft": "slow",
                    "rtt_ms": 5,
                    "alpha": 0.8,
                    "policy": p,
                    "seed": seed,
                    "executor": ex,
                    "output_token_throughput_tps": base * (1 + g / 100.0),
                    "goodput_rps": 2.0,
                    "tpot_ms": 50.0,
                    "mean_gamma": 2.0,
                    "error": None,
                }
            )
    return runs


GAINS = {
    ("good", "awc", "sim"): [10.0, 12.0],
    ("good", "awc", "emu"): [12.0, 14.0],  # diff +2: pass
    ("bad", "awc", "sim"): [10.0, 10.0],
    ("bad", "awc", "emu"): [20.0, 18.0],  # diff +9: fail
    ("edge", "awc", "sim"): [0.0, 0.0],
    ("edge", "awc", "emu"): [-5.0, -5.0],
}  # |diff| = 5: pass (<=)


def test_validation_gains_differences_and_verdicts():
    rows = {r["scenario"]: r for r in awc_report.validation(_runs(GAINS))}
    assert set(rows) == {"good", "bad", "edge"}
    g = rows["good"]
    assert g["policy"] == "awc" and g["seeds"] == [1, 2]
    assert g["sim_gain_pct"] == pytest.approx(11.0) and g["emu_gain_pct"] == pytest.approx(13.0)
    assert g["diff_points"] == pytest.approx(2.0) and g["diff_ci"] == pytest.approx(0.0, abs=1e-9)
    assert g["sim_gain_ci"] == pytest.approx(12.706)  # t(1 dof) * std 1.414 / sqrt(2)
    assert g["pass"] is True
    assert rows["bad"]["diff_points"] == pytest.approx(9.0) and rows["bad"]["pass"] is False
    assert rows["edge"]["diff_points"] == pytest.approx(-5.0) and rows["edge"]["pass"] is True
    v = awc_report.verdict(list(rows.values()))
    assert (v["judged"], v["passed"], v["failed"]) == (3, 2, ["bad awc"])
    assert v["max_abs_diff"] == pytest.approx(9.0)
    assert awc_report.validation(_runs(GAINS), tolerance=10.0)[1]["pass"] is True


def test_failed_runs_leave_their_seed_out():
    runs = _runs(GAINS)
    for r in runs:  # seed 2 of the emulated baseline failed in "bad": only seed 1 is paired there
        if (r["cell"], r["policy"], r["seed"], r["executor"]) == ("bad", "static:4", 2, "emu"):
            r.update(error="RuntimeError: node died", output_token_throughput_tps=None)
    rows = {r["scenario"]: r for r in awc_report.validation(runs)}
    assert rows["bad"]["seeds"] == [1] and rows["bad"]["diff_points"] == pytest.approx(10.0)
    assert rows["bad"]["diff_ci"] != rows["bad"]["diff_ci"]  # nan: one seed has no interval
    assert rows["good"]["seeds"] == [1, 2]
    only_sim = [r for r in runs if not (r["cell"] == "edge" and r["executor"] == "emu")]
    edge = {r["scenario"]: r for r in awc_report.validation(only_sim)}["edge"]
    assert edge["seeds"] == [] and edge["pass"] is None


def test_report_is_written_from_result_json_alone(tmp_path, capsys):
    (tmp_path / "result.json").write_text(
        json.dumps(
            {
                "config": {
                    "tolerance_points": 5.0,
                    "cells": ["good", "bad", "edge"],
                    "seeds": [1, 2],
                    "net": "mininet",
                },
                "runs": _runs(GAINS),
            }
        )
    )
    assert awc_report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 within 5 points" in out and "FAIL" in out
    page = (tmp_path / "report.html").read_text()
    assert "id='validation-table'" in page and "data:image/png;base64," in page
    assert page.count("<td class='fail'>✘</td>") == 1 and page.count("<td class='pass'>✔</td>") == 2
    assert (tmp_path / "plots" / "awc_emu_gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((tmp_path / "validation.json").read_text())
    assert doc["verdict"]["failed"] == ["bad awc"] and len(doc["throughput"]) == 3
