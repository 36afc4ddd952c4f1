"""The docker node runtime (issue 11), for real: the engine (started by the testbed when it is not running), the
node image built locally without a registry, containers that are the emulated hosts, limits, faults, cleanup.

Needs root. On a fresh machine `make test` installed docker.io and mmdebstrap (scripts/system-packages.txt); the
session fixture starts dockerd when none runs (and stops it again at the end) and builds the node image.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import read_json, wait_for
from testbed.errors import InputError
from testbed.spec import load_scenario

ROOT = Path(__file__).resolve().parents[1]
TOPO = str(ROOT / "topologies" / "star-4edge.yaml")
LOAD = [
    "workload.trace=synthetic",
    "workload.synthetic.n_requests=40",
    "workload.synthetic.rate_rps=10",
    "workload.synthetic.output_mean=60",
    "workload.synthetic.prompt_mean=200",
    "workload.duration_s=null",
    "workload.max_output_tokens=150",
    "run.request_timeout_s=3",
    "run.drain_timeout_s=20",
]

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the docker runtime needs root"),
]


@pytest.fixture(scope="module")
def engine():
    """A running engine and a current node image; stops the engine at the end only if this fixture started it."""
    from testbed.emu.runtime import engine as eng
    from testbed.emu.runtime import image as img

    was_running = eng.client(timeout=10) is not None
    client = eng.ensure_engine()
    ref, _ = img.find_image(client)
    if ref is None:
        ref = img.build_image(client)
    yield client
    if not was_running and eng.started_by_us():
        eng.stop_engine()


def _containers(client, **labels) -> list:
    flt = [f"{k}={v}" for k, v in labels.items()] or ["dsd.run"]
    return client.containers.list(all=True, filters={"label": flt})


def _emulate(out: Path, *extra: str, net: str = "none", load=LOAD) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "testbed",
        "emulate",
        TOPO,
        "--runtime",
        "docker",
        "--net",
        net,
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    for s in load:
        argv += ["--set", s]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_image_is_current_and_labelled(engine):
    from testbed.emu.runtime import image as img

    ref, stale = img.find_image(engine)
    assert ref == img.image_ref() and stale is None
    labels = engine.images.get(ref).labels
    assert labels["dsd.version"] == img.image_version() and labels["dsd.project_version"] == img.project_version()
    out = engine.containers.run(
        ref, [img.IMAGE_PYTHON, "-c", "import nodes.draft, nodes.target; print('ok')"], network_mode="none", remove=True
    )
    assert out.strip() == b"ok"
    # the nodes' C libraries come prebuilt (no compiler in the image): loaded, not rebuilt
    from nodes import rowgemm

    if rowgemm.cpu_supported():
        code = "from nodes import rowgemm; print(rowgemm.load())"
        out = engine.containers.run(ref, [img.IMAGE_PYTHON, "-c", code], network_mode="none", remove=True)
        assert out.decode().strip().startswith("on ("), out


def test_stale_image_is_reported_before_anything_is_built(engine, monkeypatch):
    from testbed.emu.runtime import image as img
    from testbed.emu.runtime import make_runtime

    monkeypatch.setattr(img, "image_version", lambda: "0000deadbeef")
    before = {c.id for c in _containers(engine)}
    with pytest.raises(InputError, match="stale.*make image"):
        make_runtime(load_scenario(TOPO, LOAD), "docker", network="none", build_image=False)
    assert {c.id for c in _containers(engine)} == before


def test_memory_limit_below_the_node_is_input_error(engine, tmp_path):
    with pytest.raises(InputError, match="edge0: memory_mb"):
        from testbed.emu.runtime import make_runtime

        make_runtime(load_scenario(TOPO, [*LOAD, "edges.0.memory_mb=64"]), "docker", network="none")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed",
            "emulate",
            TOPO,
            "--runtime",
            "docker",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "edges.0.memory_mb=64",
            *sum((["--set", s] for s in LOAD), []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "memory_mb" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_loopback_run_in_containers(engine, tmp_path):
    out = tmp_path / "run"
    p = _emulate(out)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    req = pd.read_parquet(out / "emu" / "requests.parquet")
    assert len(req) == 40 and (req["status"] == "ok").all() and (req["tokens_out"] == req["output_tokens"]).all()
    meta = read_json(out / "meta.json")
    assert meta["backends"]["runtime"] == "docker"
    s = read_json(out / "emu" / "summary.json")
    rt = s["emulator"]["runtime"]
    assert rt["runtime"] == "docker" and rt["labels"]["dsd.version"]
    for n in ("cloud0", "edge0"):
        assert s["nodes"][n]["container"].endswith(f"-{n}") and s["nodes"][n]["oom_killed"] is False
        assert "bound" in (out / "emu" / "logs" / "cloud0.log").read_text() or n != "cloud0"
    assert _containers(engine, **{"dsd.owner": str(p.pid)}) == []  # every container removed


def test_containers_are_the_emulated_hosts(engine):
    """Mininet network with docker hosts: interfaces in the containers' namespaces, no default route, RTT between
    two containers = the sum of the configured delays, limits set on the node containers; nothing left after."""
    from testbed.emu.cleanup import find_leftovers
    from testbed.emu.emulator import make_emulator
    from testbed.emu.net.verify import measure_rtts

    sc = load_scenario(TOPO, [*LOAD, "edges.0.count=2", "edges.0.cpu_share=0.5", "edges.0.memory_mb=512"])
    em = make_emulator(sc, "mininet", runtime="docker", verify="off")
    with em:
        rt, net = em.runtime, em.net
        for h, holder in rt.holders.items():
            pid = holder.attrs["State"]["Pid"]
            assert net.hosts[h].pid != pid
            assert os.stat(f"/proc/{net.hosts[h].pid}/ns/net").st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
            routes = subprocess.run(
                ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "route"], capture_output=True, text=True
            ).stdout
            assert "default" not in routes and "eth0" in routes
        res = measure_rtts(net, {"edge0": ["cloud0"], "edge1": ["cloud0"]}, count=20, interval=0.02)
        for k, m in res.items():
            rtts = sorted(m["rtt_us"])
            assert len(rtts) >= 18, k
            p50 = rtts[len(rtts) // 2] / 1e3
            assert abs(p50 - 2 * (10 + 1)) < 2.0, (k, p50)
        tag = rt.tag
        h = rt.start("edge0", [sys.executable, "-c", "import time; time.sleep(30)"], {}, Path("/tmp/dsd-test.log"), "/")
        attrs = h.c.attrs["HostConfig"]
        assert attrs["NanoCpus"] == int(0.5e9) and attrs["Memory"] == 512 << 20
        assert attrs["NetworkMode"] == f"container:{rt.holders['edge0'].id}"
        busy = rt.start(
            "edge1",
            [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 4: pass"],
            {},
            Path("/tmp/dsd-test-busy.log"),
            "/",
        )
        t0 = time.monotonic()
        assert busy.wait(30) == 0
        wall = time.monotonic() - t0
        cpu = busy.exit_info()
        # a busy loop limited to 0.5 CPU: never more than half of the wall time (accounting sampled once a second)
        assert 0 < cpu["cpu_used_s"] <= 0.55 * wall + 0.1, (cpu, wall)
    assert _containers(engine, **{"dsd.run": tag}) == []
    f = find_leftovers(include_live=True)
    assert not [x for x in f["links"] if x.startswith("dsd" + tag)] and tag not in f["forward_rules"]


def test_oom_killed_node_is_reported(engine):
    from testbed.emu.runtime import make_runtime

    sc = load_scenario(TOPO, [*LOAD, "edges.0.memory_mb=200"])
    rt = make_runtime(sc, "docker", network="none")
    log = Path("/tmp/dsd-test-oom.log")
    with rt:
        rt.bind_run(Path("/tmp"), None)
        h = rt.start("edge0", [sys.executable, "-c", "x = bytearray(600 << 20); print(len(x))"], {}, log, "/")
        rc = h.wait(60)
        assert rc is not None and rc != 0
        info = h.exit_info()
        assert info["oom_killed"] is True and "OOM" in info["error"]


def test_killed_container_run_survives_and_reports_it(engine, tmp_path):
    out = tmp_path / "run"
    p = _emulate(out, "--on-crash", "continue")
    try:
        nodes = out / "emu" / "nodes"
        wait_for(lambda: read_json(nodes / "edge1" / "progress.json").get("ok", 0) >= 2, 120, "edge1 progress")
        victim = wait_for(
            lambda: _containers(engine, **{"dsd.node": "edge1", "dsd.owner": str(p.pid), "dsd.kind": "node"}),
            10,
            "edge1's container",
        )
        victim[0].kill()
        _, err = p.communicate(timeout=180)
    finally:
        p.kill()
    assert p.returncode == 1, err[-3000:]
    req = pd.read_parquet(out / "emu" / "requests.parquet")
    s = read_json(out / "emu" / "summary.json")
    assert s["partial"] is True and s["crashed_nodes"] == ["edge1"]
    assert s["nodes"]["edge1"]["exit_code"] == 137 and s["nodes"]["edge1"]["oom_killed"] is False
    assert len(req) == 40 and req["status"].isin(["ok", "failed"]).all()
    others = req[req["edge"] != "edge1"]
    assert (others["status"] == "ok").all()
    assert s["nodes"]["cloud0"]["dead_peers"] == ["edge1"]


def test_cleanup_after_killed_orchestrator(engine, tmp_path):
    from testbed.emu.cleanup import find_leftovers

    out = tmp_path / "run"
    p = _emulate(out, net="mininet", load=[*LOAD, "edges.0.count=2", "workload.synthetic.n_requests=400"])
    try:
        wait_for(lambda: (out / "emu" / "t0").is_file(), 180, "the run's start")
        assert _containers(engine, **{"dsd.owner": str(p.pid)})
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    r = subprocess.run([sys.executable, "-m", "testbed", "cleanup"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _containers(engine, **{"dsd.owner": str(p.pid)}) == []
    f = find_leftovers(include_live=False)
    for k in ("shells", "delaylines", "processes_in_namespaces", "links", "forward_rules", "containers"):
        assert f[k] == [], (k, f[k])


@pytest.fixture
def forward_drop():
    """The host as a Docker engine with Debian's defaults leaves it: FORWARD policy DROP, bridged frames through
    iptables. Restored afterwards."""
    nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not nf.exists():
        pytest.skip("br_netfilter not loaded: bridged frames never see iptables here")
    old_nf = nf.read_text().strip()
    old_policy = next(
        ln.split()[2]
        for ln in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout.splitlines()
        if ln.startswith("-P")
    )
    nf.write_text("1")
    subprocess.run(["iptables", "-w", "-P", "FORWARD", "DROP"], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-w", "-P", "FORWARD", old_policy], check=True)
        nf.write_text(old_nf)


def test_bridges_immune_to_forward_drop_and_dead_path_stops_the_run(forward_drop, monkeypatch):
    from testbed.emu.cleanup import find_leftovers
    from testbed.emu.net import make_network
    from testbed.emu.net.mininet_net import MininetNetwork
    from testbed.errors import EmulationError

    sc = load_scenario(TOPO, [*LOAD, "edges.0.count=1"])
    with make_network(sc, "mininet", verify="quick") as net:  # our ACCEPT rule keeps the network up
        assert all(p["measured"]["samples"] > 0 for p in net.report["paths"])
        tag = net.tag
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
        assert f"dsd-run-{tag}" in rules
    assert f"dsd-run-{tag}" not in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    monkeypatch.setattr(MininetNetwork, "_accept_bridged", lambda self: None)
    net = make_network(sc, "mininet", verify="quick")
    with pytest.raises(EmulationError, match="paths dead.*FORWARD policy is DROP"):
        with net:
            pass
    f = find_leftovers(include_live=True)
    assert not [x for x in f["links"] if x.startswith("dsd" + net.tag)] and not [
        s for s in f["shells"] if s[1] == net.tag
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_orchestrator_removes_every_container(engine, tmp_path, sig):
    out = tmp_path / "run"
    p = _emulate(out, load=[*LOAD, "workload.synthetic.n_requests=400"])
    try:
        wait_for(lambda: (out / "emu" / "t0").is_file(), 180, "the run's start")
        assert _containers(engine, **{"dsd.owner": str(p.pid)})
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode in (130, 1), err[-2000:]
    assert read_json(out / "emu" / "summary.json")["partial"] is True
    assert _containers(engine, **{"dsd.owner": str(p.pid)}) == []
