"""Spec loading and validation: shipped topologies resolve; bad input names file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.spec import load_scenario, spec_to_yaml

ROOT = Path(__file__).resolve().parent.parent


def skip_without_net_traces(path: Path) -> None:
    """Topologies on capacity traces need the Mahimahi files, which are not part of the repository."""
    from traces.nettrace import net_trace_dirs

    names = [
        ln.split(":", 1)[1].strip()
        for ln in path.read_text().splitlines()
        if ln.strip().startswith(("trace_fwd:", "trace_rev:"))
    ]
    missing = [n for n in names if not any((d / n).is_file() for d in net_trace_dirs())]
    if missing:
        pytest.skip(f"network traces not on this machine: {', '.join(missing)} (see ../shared/net-traces)")


SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_topologies_resolve_and_round_trip(path, tmp_path):
    skip_without_net_traces(path)
    sc = load_scenario(path)
    assert sc.drafts and sc.targets
    for d in sc.drafts:
        for t in sc.reachable[d]:
            assert sc.paths[(d, t)] and len(sc.paths[(d, t)]) == len(sc.paths[(t, d)])
    again = tmp_path / "spec.yaml"
    again.write_text(spec_to_yaml(sc.spec))
    sc2 = load_scenario(again)
    assert sc2.spec == sc.spec and sc2.paths == sc.paths


def test_required_topologies_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {
        "star-4edge",
        "star-16edge",
        "two-tier",
        "hetero-edge",
        "multi-cloud",
        "cellular-edge",
        "flaky-wan",
        "verifier-restart",
    } <= names


def test_two_tier_paths_cross_the_wan():
    sc = load_scenario(ROOT / "topologies/two-tier.yaml")
    assert len(sc.paths[("edge0", "cloud1")]) == 3
    assert sc.path_delay_s("edge0", "cloud0") == pytest.approx((2 + 20 + 0.5) / 1e3)


BASE = """\
name: t
nodes:
  - {name: cloud0, role: target}
  - {name: sw0, role: switch}
edges:
  - prefix: edge
    count: 2
    link: {to: sw0, delay_ms: 5}
links:
  - {a: sw0, b: cloud0, delay_ms: 1}
"""


def write(tmp_path, text):
    p = tmp_path / "topo.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text,needle",
    [
        (BASE + "bogus: 1\n", "topo.yaml:11: bogus: unknown key"),
        (
            BASE.replace("delay_ms: 5", "delay_ms: -5"),
            "topo.yaml:8: edges[0].link.delay_ms: Input should be greater than or equal to 0",
        ),
        (BASE.replace("{a: sw0, b: cloud0", "{a: sw9, b: cloud0"), "links[0].a: link to unknown node 'sw9'"),
        (BASE.replace("role: target}", "role: targett}"), "nodes[0].role"),
        (
            BASE + "  - {a: edge0, b: cloud0}\n  - {a: edge0, b: cloud0, delay_ms: 3}\n",
            "second link between 'edge0' and 'cloud0'",
        ),
        (BASE + "workload: {rate_scale: 0}\n", "workload.rate_scale: Input should be greater than 0"),
        (BASE + "policy: {window: static:0}\n", "policy.window: unknown window policy 'static:0'"),
        (
            BASE.replace("count: 2", "count: 2\n    profile: nosuch"),
            "edges[0].profile: unknown compute profile 'nosuch'",
        ),
        (
            "name: t\nnodes: [{name: cloud0, role: target}, {name: edge0, role: draft}]\n",
            "nodes[1]: draft 'edge0' has no link",
        ),
        (
            BASE + "models: {temperature: 0.5, lookup_ngram: 3}\n",
            "lookup_ngram drafts deterministic copies: it needs temperature 0",
        ),
        ("- just a list\n", "must be a YAML mapping"),
        ("name: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_specs_name_file_line_and_field(tmp_path, text, needle):
    with pytest.raises(SpecError) as e:
        load_scenario(write(tmp_path, text))
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg and msg.startswith(str(tmp_path / "topo.yaml"))


def test_draft_that_reaches_no_target(tmp_path):
    text = BASE + "  - {name: edgex, role: draft}\n  - {name: sw1, role: switch}\n"
    text = text.replace("nodes:\n", "nodes:\n  - {name: edgex, role: draft}\n  - {name: sw1, role: switch}\n", 1)
    text = text.rsplit("  - {name: edgex", 1)[0]
    text += "  - {a: edgex, b: sw1}\n"
    with pytest.raises(SpecError, match="draft 'edgex' reaches no target"):
        load_scenario(write(tmp_path, text))


def test_set_overrides(tmp_path):
    p = write(tmp_path, BASE)
    sc = load_scenario(p, ["policy.window=hf:3", "links.0.delay_ms=7", "workload.duration_s=null", "seed=42"])
    assert sc.spec.policy.window == "hf:3" and sc.spec.links[-1].delay_ms == 7 and sc.spec.workload.duration_s is None
    assert sc.spec.seed == 42
    with pytest.raises(SpecError, match="--set: links.5.delay_ms"):
        load_scenario(p, ["links.5.delay_ms=1"])
    with pytest.raises(SpecError, match="expected key=value"):
        load_scenario(p, ["policy.window"])


def test_cli_bad_spec_exits_2_and_writes_nothing(tmp_path):
    p = write(tmp_path, BASE + "bogus: 1\n")
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "sim", str(p), "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bogus: unknown key" in r.stderr
    assert not out.exists()


def test_binary_topology_file_is_a_one_line_error(tmp_path):
    p = tmp_path / "topo.yaml"
    p.write_bytes(b"name: x\nnodes:\n" + bytes(range(128, 256)))
    with pytest.raises(SpecError, match=r"topo.yaml:3: not a text file"):
        load_scenario(p)
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "sim", str(p), "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not a text file" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_real_model_drafts_get_one_slot():
    """A real model computes one draft at a time: unlimited slots (0) resolve to 1 with the hf backend, so the
    simulator does not draft in parallel where the node cannot; an explicit value is kept."""
    plain = load_scenario(ROOT / "topologies/star-4edge.yaml")
    assert all(plain.node(d).draft_slots == 0 for d in plain.drafts)
    hf = load_scenario(ROOT / "topologies/star-4edge.yaml", ["models.backend=hf"])
    assert all(hf.node(d).draft_slots == 1 for d in hf.drafts)
    two = load_scenario(ROOT / "topologies/star-4edge.yaml", ["models.backend=hf", "edges.0.draft_slots=2"])
    assert all(two.node(d).draft_slots == 2 for d in two.drafts)


def test_uncalibrated_profiles_with_real_models_are_named():
    from testbed.commands.common import uncalibrated_nodes

    assert uncalibrated_nodes(load_scenario(ROOT / "topologies/star-4edge.yaml")) == []  # profiled: nothing to say
    hf = load_scenario(ROOT / "topologies/star-4edge.yaml", ["models.backend=hf"])
    assert set(uncalibrated_nodes(hf)) == set(hf.drafts) | set(hf.targets)
    assert uncalibrated_nodes(load_scenario(ROOT / "topologies/hf-pair.yaml")) == []
