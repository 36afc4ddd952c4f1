"""The AWC evaluation grid (acceptance dimension) and the goal summary, without running the grid."""

from __future__ import annotations

import pandas as pd

from testbed.awc.evaluate import ALPHAS, Cell, cell_spec, goal_lines, grid
from testbed.spec import TopologySpec, resolve


def test_grid_has_the_acceptance_dimension_and_specs_carry_it():
    cells = grid()
    assert len(cells) == 4 * 2 * 2 * len(ALPHAS) and len({c.name for c in cells}) == len(cells)
    c = Cell(20, "light", "slow", 0.6)
    assert c.name == "rtt20-light-slow-a0.6"
    spec = resolve(TopologySpec.model_validate(cell_spec(c, "awc", 3, 10)), source="<test>").spec
    assert spec.models.acceptance.kind == "iid" and spec.models.acceptance.alpha == 0.6
    assert spec.seed == 3 and spec.policy.window == "awc"
    assert [x.alpha for x in grid(rtts=(5,), alphas=(0.95,))] == [0.95] * 4


def test_goal_lines_count_scenarios_within_3_percent_and_gain_where_best_is_not_4():
    cols = {
        "awc_good_vs_best_pct": [-1.0, -4.0, 0.0],
        "awc_tput_vs_best_pct": [-1.0, -2.0, 0.5],
        "awc_tput_vs_static4_pct": [12.0, 6.0, 0.0],
        "awc_good_vs_static4_pct": [10.0, 5.0, 0.0],
        "awc_tpot_vs_static4_pct": [-3.0, -1.0, 0.0],
        "static:4_tput_vs_best_pct": [-13.0, -8.0, 0.0],
    }
    gap = pd.DataFrame(
        {
            "cell": ["a", "b", "c"],
            "alpha": [0.6, 0.6, 0.95],
            "best_static": ["static:2", "static:8", "static:4"],
            **cols,
        }
    )
    lines = goal_lines(gap)
    assert lines[0].startswith("AWC [all]: within 3% of the hindsight-best static in 2/3 scenarios (goodput), 3/3")
    assert "where the best static is not 4 (2 scenarios): throughput +9.0% (best +12.0%)" in lines[0]
    assert "static:4's own gap to the best static there: -10.5%" in lines[0]
    assert [ln.split("]")[0] for ln in lines] == ["AWC [all", "AWC [a=0.6", "AWC [a=0.95"]
    assert "not 4" not in lines[2]  # a=0.95: its only scenario's best static is 4
