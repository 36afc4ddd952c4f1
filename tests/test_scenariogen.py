"""The random scenario generator (issue 17): seeded, valid, and covering what it promises over a set."""

from __future__ import annotations

import collections
import json

import yaml

from testbed.scenariogen import LOADS, TRACE_FAMILIES, generate, generate_set
from testbed.spec import load_scenario


OURS = tuple(f for f in TRACE_FAMILIES if not f.startswith("azure"))  # the Azure files need not be on this machine


def test_same_seed_same_scenario_and_valid(tmp_path):
    a = generate(3, 5, tmp_path / "a", families=OURS)
    b = generate(3, 5, tmp_path / "b", families=OURS)
    assert {k: v for k, v in a.items() if k != "path"} == {k: v for k, v in b.items() if k != "path"}
    ya, yb = (yaml.safe_load((tmp_path / d / "topology.yaml").read_text()) for d in ("a", "b"))
    ya["workload"].pop("trace"), yb["workload"].pop("trace")  # absolute paths of the written trace files differ
    assert ya == yb
    assert generate(3, 6, tmp_path / "c", families=OURS) != a
    sc = load_scenario(tmp_path / "a" / "topology.yaml")
    for d in sc.drafts:
        for t in sc.reachable[d]:
            assert len(sc.paths[(d, t)]) == a["hops"]


def test_a_set_covers_the_space(tmp_path):
    fams = OURS
    scen = generate_set(1, 40, tmp_path, duration_s=10, available=fams)
    assert len(scen) == 40 and json.loads((tmp_path / "scenarios.json").read_text()) == scen
    assert {s["hops"] for s in scen} == {1, 2, 3, 4}
    assert set(collections.Counter(s["trace"] for s in scen)) == set(fams)
    assert {s["window"].split(":")[0] for s in scen} == {"static", "hf", "specdec", "awc"}
    assert {s["load"] for s in scen} == set(LOADS)
    assert any(s["shared_links"] for s in scen) and any(s["jitter"] for s in scen) and any(s["loss"] for s in scen)
    assert any(s["targets"] > 1 for s in scen)
    bws, delays = [], []
    for s in scen:
        spec = yaml.safe_load(open(s["path"]))
        for l in [g["link"] for g in spec["edges"]] + spec["links"]:
            delays.append(l["delay_ms"])
            if "bw_mbps" in l:
                bws.append(l["bw_mbps"])
    assert 1 <= min(bws) < 10 and 100 < max(bws) <= 1000 and max(delays) > 30


def test_min_requests_lengthens_light_scenarios_only(tmp_path):
    """--min-requests: a scenario whose rate gives fewer requests gets a longer window; everything else about it
    (topology, policies, acceptance, load) stays as at the default duration, and a long one is left as it is."""
    from testbed.workload import build_workload

    base = generate_set(1, 12, tmp_path / "a", duration_s=10, available=OURS)
    long = generate_set(1, 12, tmp_path / "b", duration_s=10, available=OURS, min_requests=60)
    lengthened = 0
    for a, b in zip(base, long):
        assert {k: v for k, v in a.items() if k not in ("path", "duration_s")} == {
            k: v for k, v in b.items() if k not in ("path", "duration_s")
        }
        ya, yb = (yaml.safe_load(open(s["path"])) for s in (a, b))
        wa, wb = ya.pop("workload"), yb.pop("workload")
        assert ya == yb
        assert wa["mapping"] == wb["mapping"]
        want = max(10.0, round(60 / a["rate_rps"], 1))
        assert abs(b["duration_s"] - want) <= 0.2  # rate_rps is rounded
        if want >= 30.0:  # at least three times as long
            lengthened += 1
            n = len(build_workload(load_scenario(b["path"])))
            assert n > 2 * len(build_workload(load_scenario(a["path"]))), (b["path"], n)
            assert n >= 30, (b["path"], n)  # Poisson / a real trace's window: about 60, not exactly
    assert lengthened >= 3
