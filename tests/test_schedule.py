"""The `schedule` section (issue 12): resolution, strict validation, the Mahimahi delivery model, fault rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testbed.errors import SpecError
from testbed.faults import retransmit_until
from testbed.schedule import LinkTrace, TraceServer
from testbed.spec import load_scenario, spec_to_yaml
from traces.nettrace import load_mahimahi, mean_capacity_mbps

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
name: t
nodes:
  - {name: cloud0, role: target}
  - {name: sw0, role: switch}
edges:
  - prefix: edge
    count: 2
    link: {to: sw0, delay_ms: 5, bw_mbps: 50}
links:
  - {a: sw0, b: cloud0, delay_ms: 1}
workload: {duration_s: 30}
"""


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def trace_file(tmp_path: Path, lines: list[str], name: str = "link.up") -> Path:
    return write(tmp_path, "\n".join(lines) + "\n", name)


def test_schedule_resolves_into_changes_intervals_and_traces(tmp_path):
    trace_file(tmp_path, ["0", "0", "5", "10"])
    write(tmp_path, "at_s,delay_ms,loss_pct\n2,,0.5\n7,30,\n", "steps.csv")
    p = write(
        tmp_path,
        BASE
        + """\
schedule:
  links:
    - link: edge*-sw0
      trace_fwd: link.up
      trace_stagger_s: 0.004
      steps: [{at_s: 5, delay_ms: 20}]
    - {link: cloud0-sw0, steps_csv: steps.csv}
  events:
    - {at_s: 3, kind: link_down, link: sw0-cloud0, until_s: 4}
    - {at_s: 8, kind: partition, nodes: [edge0]}
    - {at_s: 9, kind: heal, nodes: [edge0]}
    - {at_s: 12, kind: crash, node: cloud0, until_s: 15}
""",
    )
    sc = load_scenario(p)
    s = sc.schedule
    assert s.down == {2: ((3.0, 4.0),), 0: ((8.0, 9.0),)}
    assert s.crashed == {"cloud0": ((12.0, 15.0),)}
    assert s.traces[(0, True)].offset_ms == 0 and s.traces[(1, True)].offset_ms == 4 and (0, False) not in s.traces
    assert [c.t for c in s.changes] == sorted(c.t for c in s.changes)
    assert s.state_at(0, 4.99).delay_ms == 5 and s.state_at(0, 5.0).delay_ms == 20
    assert (
        s.state_at(2, 1).loss_pct == 0 and s.state_at(2, 2).loss_pct == 0.5 and s.state_at(2, 7) == (30, 0, 0.5, None)
    )
    assert s.link_down_at(2, 3.5) and not s.link_down_at(2, 4.0) and s.node_down_at("cloud0", 14.9)
    # the resolved spec is itself a schedule that resolves to the same thing
    again = write(tmp_path, spec_to_yaml(sc.spec), "spec.yaml")
    sc2 = load_scenario(again)
    assert sc2.spec == sc.spec and sc2.schedule.changes == s.changes and sc2.schedule.down == s.down


@pytest.mark.parametrize(
    "sched,needle",
    [
        (
            "  links: [{link: edge0-sw9, steps: [{at_s: 1, delay_ms: 2}]}]\n",
            "topo.yaml:13: schedule.links[0].link: 'edge0-sw9' names no link",
        ),
        ("  events: [{at_s: 1, kind: crash, node: nosuch}]\n", "schedule.events[0].node: crash needs `node`"),
        ("  events: [{at_s: 1, kind: crash, node: sw0}]\n", "is a switch"),
        ("  events: [{at_s: 1, kind: partition, nodes: [edge0, bogus]}]\n", "unknown node 'bogus'"),
        (
            "  events: [{at_s: 999, kind: link_down, link: sw0-cloud0}]\n",
            "schedule.events[0].at_s: 999 s is after the end of the run",
        ),
        ("  events: [{at_s: 2, kind: link_up, link: sw0-cloud0}]\n", "is not down at 2 s"),
        ("  events: [{at_s: 2, kind: link_down, link: edge*-sw0}]\n", "names 2 links"),
        ("  events: [{at_s: 2, kind: restart, node: cloud0}]\n", "is not crashed"),
        ("  events: [{at_s: 2, kind: crash, node: cloud0, until_s: 1}]\n", "until_s=1 is not after at_s=2"),
        ("  events: [{at_s: -1, kind: crash, node: cloud0}]\n", "greater than or equal to 0"),
        (
            "  links: [{link: edge0-sw0, trace_fwd: no-such-trace}]\n",
            "schedule.links[0].trace_fwd: no-such-trace: network trace not found",
        ),
        (
            "  links: [{link: sw0-cloud0, steps: [{at_s: 1, bw_mbps: 3}]}]\n",
            "a rate step on link sw0-cloud0, which has no bw_mbps",
        ),
        ("  links: [{link: edge0-sw0}, {link: sw0-edge0}]\n", "already scheduled by schedule.links[0]"),
        ("  bogus: 1\n", "schedule.bogus: unknown key"),
    ],
)
def test_bad_schedules_name_file_line_and_field(tmp_path, sched, needle):
    with pytest.raises(SpecError) as e:
        load_scenario(write(tmp_path, BASE + "schedule:\n" + sched))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith(str(tmp_path / "topo.yaml"))


@pytest.mark.parametrize(
    "lines,needle",
    [
        (["0", "x5", "10"], "link.up:2: 'x5' is not a whole number"),
        (["0", "10", "5"], "link.up:3: time 5 ms is before the previous line's 10 ms"),
        (["0", "-3"], "link.up:2: negative time"),
        (["0", "0"], "the last time must be > 0"),
        ([], "link.up:1: empty network trace"),
    ],
)
def test_malformed_trace_is_named_by_path_and_line(tmp_path, lines, needle):
    trace_file(tmp_path, lines)
    with pytest.raises(SpecError) as e:
        load_scenario(write(tmp_path, BASE + "schedule:\n  links: [{link: edge0-sw0, trace_fwd: link.up}]\n"))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith(str(tmp_path / "link.up"))
    assert "schedule.links[0].trace_fwd" in msg


def test_malformed_steps_csv_is_named_by_path_and_line(tmp_path):
    write(tmp_path, "at_s,delay_ms\n1,2\n3,fast\n", "steps.csv")
    with pytest.raises(SpecError, match=r"steps.csv:3: column delay_ms: 'fast' is not a number"):
        load_scenario(write(tmp_path, BASE + "schedule:\n  links: [{link: edge0-sw0, steps_csv: steps.csv}]\n"))
    write(tmp_path, "at_s,delay\n1,2\n", "steps.csv")
    with pytest.raises(SpecError, match=r"steps.csv:1: header .* unknown column\(s\) delay"):
        load_scenario(write(tmp_path, BASE + "schedule:\n  links: [{link: edge0-sw0, steps_csv: steps.csv}]\n"))


def test_cli_bad_schedule_exits_2_and_writes_nothing(tmp_path):
    trace_file(tmp_path, ["0", "oops"])
    p = write(tmp_path, BASE + "schedule:\n  links: [{link: edge0-sw0, trace_fwd: link.up}]\n")
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "sim", str(p), "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "link.up:2:" in r.stderr
    assert not out.exists()


# -- Mahimahi delivery opportunities ----------------------------------------------------------------------


def server(times: list[int], offset_ms: int = 0) -> TraceServer:
    return TraceServer(LinkTrace("t", np.asarray(times, dtype=np.int64), offset_ms))


def test_trace_opportunities_loop_with_the_last_time_as_period():
    tr = LinkTrace("t", np.asarray([0, 0, 5, 10]), 0)
    # as mahimahi's LinkQueue: after the last line the loop restarts with its base moved by the last time
    assert tr.opportunities(0, 25).tolist() == [0, 0, 5, 10, 10, 10, 15, 20, 20, 20]
    assert LinkTrace("t", np.asarray([0, 0, 5, 10]), 5).opportunities(0, 12).tolist() == [0, 5, 5, 5, 10]


def test_full_packets_leave_one_per_opportunity_in_fifo_order():
    s = server([2, 4, 4, 9, 10])  # period 10: opportunities at 2, 4, 4, 9, 10, 12, 14, 14, ...
    out = [s.depart(0.0, 1500) for _ in range(7)]
    assert out == pytest.approx([0.002, 0.004, 0.004, 0.009, 0.010, 0.012, 0.014])


def test_small_packets_share_an_opportunity_and_big_ones_span_several():
    s = server([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert s.depart(0.0, 500) == pytest.approx(0.001)
    assert s.depart(0.0, 1000) == pytest.approx(0.001)  # fills the rest of ms 1
    assert s.depart(0.0, 1) == pytest.approx(0.002)
    assert s.depart(0.0, 3000) == pytest.approx(0.004)  # 1499 left at ms 2, then ms 3 and ms 4
    # unused opportunities are lost: a packet arriving at 7.5 ms takes the one of ms 7 (same millisecond)
    assert s.depart(0.0075, 1500) == pytest.approx(0.0075)
    assert s.depart(0.0075, 1500) == pytest.approx(0.008)


def test_trace_server_capacity_matches_the_trace_mean():
    times = np.append(np.sort(np.random.default_rng(1).integers(0, 1000, 800)), 1000)
    s = TraceServer(LinkTrace("t", times, 0))
    n = 0
    t = 0.0
    while t < 10.0:  # saturate it for 10 loops
        t = s.depart(0.0, 1500)
        n += 1
    assert n * 1500 * 8 / t / 1e6 == pytest.approx(mean_capacity_mbps(times), rel=0.01)


def test_shipped_net_trace_capacities_match_their_readme():
    from traces.nettrace import net_trace_dirs

    found = [d / "ATT-LTE-driving-2016.up" for d in net_trace_dirs() if (d / "ATT-LTE-driving-2016.up").is_file()]
    if not found:
        pytest.skip("the Mahimahi cellular traces are not on this machine (../shared/net-traces)")
    assert mean_capacity_mbps(load_mahimahi(found[0])) == pytest.approx(1.91, abs=0.01)


# -- fault rule 1: retransmission with backoff -------------------------------------------------------------


def test_retransmission_backs_off_until_the_path_is_up():
    down = lambda t: 1.0 <= t < 2.0  # noqa: E731
    assert retransmit_until(0.5, 0.2, down) == 0.5
    # sent at 1.0: tries at 1.2, 1.6, 2.4 (waits 0.2, 0.4, 0.8)
    assert retransmit_until(1.0, 0.2, down) == pytest.approx(2.4)
    assert retransmit_until(1.9, 0.2, down) == pytest.approx(2.1)
