"""`runtime: docker`: every node runs in its own container, and the container *is* the emulated host
(Containernet's design), through the Docker SDK for Python.

Per emulated host a small holder container (`sleep infinity`, started with no Docker network: only `lo`) owns the
host's network namespace; the network backend puts the host's interfaces, addresses, routes and shaping into that
namespace (testbed.emu.net.nshost). The node container then joins it (`network_mode=container:<holder>`), with the
node's own limits (`cpu_share` -> CPU quota, `memory_mb` -> memory limit, no swap), its own file system (the node
image) and process tree. So traffic between containers crosses exactly the shaped links that processes use, and a
container reaches nothing but the emulated network (no Docker bridge, no NAT, no route off the machine).
With `--net none` all nodes share one holder's namespace: loopback only.

Mounted: the run directory (read-write, same path), the trace file's and the recorded acceptance's folders, and
the model cache for real models (read-only). Every container carries the labels dsd.run (run tag), dsd.owner
(orchestrator pid), dsd.node and dsd.kind; `testbed cleanup` removes those of dead owners. Container logs are
written to emu/logs/<node>.log when the node ends; an OOM-killed node is reported as such.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testbed.emu.net.runstate import PREFIX, new_tag, pid_running
from testbed.emu.runtime import image as img
from testbed.emu.runtime.base import NodeHandle, NodeRuntime
from testbed.errors import InputError
from testbed.files import model_cache_dir
from testbed.spec import Scenario

# Each container's cgroup sits at the top of the hierarchy, as a node process of the process runtime does: under
# Docker's default parent (/docker) all nodes of a run would share the CPU weight of one task when the machine is
# busy (measured: timer lateness of the nodes doubled, TTFT +8 % against the process runtime under load).
CGROUP_PARENT = "/"
CGROUP_ROOT = Path("/sys/fs/cgroup")  # cgroups v1 (the engine's cgroupfs driver)
PARALLEL = 8  # containers created / removed at once
# A node program (Python with numpy, pandas, pyarrow, zmq) needs about this much memory before any model.
NODE_BASE_MB = 192
LABEL_RUN, LABEL_OWNER, LABEL_NODE, LABEL_KIND = "dsd.run", "dsd.owner", "dsd.node", "dsd.kind"
ENV_PASS_PREFIX = ("DSD_",)


def _quiet(fn, *a, **kw) -> None:
    try:
        fn(*a, **kw)
    except Exception:  # noqa: BLE001 - teardown never raises
        pass


class ContainerHandle(NodeHandle):
    """A node container. Liveness from its main process's pid (cheap); the engine is asked once it ended."""

    def __init__(self, container, log: Path):
        self.c = container
        self.log = log
        self._pid = int(container.attrs.get("State", {}).get("Pid") or 0) or None
        self.rc: int | None = None
        self.state: dict[str, Any] = {}
        self.started = time.monotonic()
        self.cpu: dict[str, float] = {}  # last cgroup CPU accounting seen while it ran (the cgroup goes with it)
        self._cpu_read = 0.0

    @property
    def pid(self) -> int | None:
        return self._pid

    def _sample_cpu(self) -> None:
        """CPU time used and CFS throttling of the container's cgroup (its CPU limit at work), at most once a second."""
        now = time.monotonic()
        if now - self._cpu_read < 1.0:
            return
        self._cpu_read = now
        rel = Path(CGROUP_PARENT.strip("/")) / self.c.id
        try:
            stat = dict(line.split() for line in (CGROUP_ROOT / "cpu" / rel / "cpu.stat").read_text().splitlines())
            acct = next(
                p for p in (CGROUP_ROOT / "cpuacct" / rel, CGROUP_ROOT / "cpu" / rel) if (p / "cpuacct.usage").exists()
            )
            self.cpu = {
                "cpu_used_s": int((acct / "cpuacct.usage").read_text()) / 1e9,
                "cpu_throttled_periods": int(stat.get("nr_throttled", 0)),
                "cpu_throttled_s": int(stat.get("throttled_time", 0)) / 1e9,
            }
        except (OSError, ValueError, StopIteration):
            pass

    def poll(self) -> int | None:
        if self.rc is not None:
            return self.rc
        if pid_running(self._pid):
            self._sample_cpu()
            return None
        try:
            self.c.reload()
        except Exception:  # noqa: BLE001 - removed underneath us
            self.rc = -9
            return self.rc
        st = self.c.attrs.get("State", {})
        if st.get("Running"):
            return None
        self.state = st
        self.rc = int(st.get("ExitCode", -1))
        self.collect_log()
        return self.rc

    def signal(self, sig: int) -> None:
        _quiet(self.c.kill, signal=int(sig))

    def wait(self, timeout: float | None = None) -> int | None:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                return None
            time.sleep(0.05)
        return self.rc

    def collect_log(self) -> None:
        try:
            data = self.c.logs(stdout=True, stderr=True)
        except Exception:  # noqa: BLE001
            return
        self.log.write_bytes(data)

    def exit_info(self) -> dict[str, Any]:
        st = self.state
        info: dict[str, Any] = {"container": self.c.name, **self.cpu}
        if st:
            info["oom_killed"] = bool(st.get("OOMKilled"))
            if st.get("OOMKilled"):
                info["error"] = "killed by the kernel's OOM killer (memory_mb too small for this node)"
        return info


class DockerRuntime(NodeRuntime):
    name = "docker"

    def __init__(self, scenario: Scenario, network: str = "mininet", build_image: bool = True, tag: str | None = None):
        super().__init__(scenario)
        self.network = network
        self.auto_build = build_image
        self.tag = tag
        self.client = None
        self.image: str | None = None
        self.models = scenario.spec.models.backend != "profiled"
        self.holders: dict[str, Any] = {}
        self.containers: dict[str, ContainerHandle] = {}
        self.mounts: dict[str, dict[str, str]] = {}
        self.model_cache: Path | None = None
        self.trace_dir: str | None = None
        self.timings: dict[str, float] = {}
        self._torn_down = False

    # ---- before anything is built ----------------------------------------------------------------------
    def check(self) -> None:
        from testbed.emu.runtime.engine import ensure_engine

        self.check_memory()
        self.client = ensure_engine()
        ref, stale = img.find_image(self.client, self.models)
        if ref is None:
            what = f"stale (built for source {stale}, the project is at {img.image_version()})" if stale else "missing"
            if not self.auto_build:
                raise InputError(
                    "runtime: docker",
                    f"node image {img.image_ref(self.models)} {what}: run `make image"
                    f"{' MODELS=1' if self.models else ''}` (or drop --no-image-build)",
                )
            print(f"node image {what}: building {img.image_ref(self.models)} (make image) ...", flush=True)
            t = time.monotonic()
            ref = img.build_image(self.client, self.models)
            self.timings["image_build_s"] = time.monotonic() - t
        self.image = ref
        self.tag = self.tag or new_tag()

    def check_memory(self) -> None:
        """A node program needs NODE_BASE_MB before any model (real models: commands.common.check_models adds
        the model's size)."""
        for n in self.scenario.nodes:
            if n.role != "switch" and n.memory_mb is not None and n.memory_mb < NODE_BASE_MB:
                raise InputError(
                    f"{self.scenario.source}: node {n.name}: memory_mb",
                    f"{n.memory_mb} MB is below what a node program needs (about {NODE_BASE_MB} MB before "
                    "any model); raise memory_mb or drop it",
                )

    # ---- lifecycle -------------------------------------------------------------------------------------
    def _labels(self, node: str, kind: str) -> dict[str, str]:
        return {LABEL_RUN: self.tag, LABEL_OWNER: str(os.getpid()), LABEL_NODE: node, LABEL_KIND: kind}

    def build(self) -> None:
        if self.client is None:
            self.check()
        t = time.monotonic()
        hosts = [n.name for n in self.scenario.nodes if n.role != "switch"] if self.network != "none" else ["lo"]

        def holder(h: str):
            c = self.client.containers.run(
                self.image,
                ["sleep", "infinity"],
                name=f"{PREFIX}{self.tag}-{h}-ns",
                network_mode="none",
                detach=True,
                labels=self._labels(h, "holder"),
                init=True,
                hostname=h,
                cgroup_parent=CGROUP_PARENT,
            )
            c.reload()
            return h, c

        err: Exception | None = None
        with ThreadPoolExecutor(PARALLEL) as pool:  # the engine creates containers concurrently
            futures = [pool.submit(holder, h) for h in hosts]
            for f in futures:
                try:
                    h, c = f.result()
                    self.holders[h] = c
                except Exception as e:  # noqa: BLE001 - the others are collected, then torn down
                    err = e
            if len(self.holders) < len(hosts):
                raise RuntimeError(f"docker runtime: creating holder containers failed: {err}")
        self.timings["holders_s"] = time.monotonic() - t

    def netns_pids(self) -> dict[str, int] | None:
        if self.network == "none":
            return None
        return {h: int(c.attrs["State"]["Pid"]) for h, c in self.holders.items()}

    def bind_run(self, run_dir: Path, trace_source: str | None) -> None:
        """The folders a node program reads or writes: the run directory (rw), the trace's and the recorded
        acceptance's folders and the model cache (ro), each at the same path inside the container."""
        m = {str(Path(run_dir).resolve()): {"bind": str(Path(run_dir).resolve()), "mode": "rw"}}
        ro = []
        if trace_source and Path(trace_source).is_file():
            self.trace_dir = str(Path(trace_source).resolve().parent)
            ro.append(Path(self.trace_dir))
        acc = self.scenario.spec.models.acceptance
        if acc.path:
            ro.append(Path(acc.path).resolve().parent)
        if self.models:  # resolve() materialised the shipped models here before the build (check_models)
            self.model_cache = model_cache_dir().resolve()
            ro.append(self.model_cache)
        for d in ro:
            if d.is_dir():
                m.setdefault(str(d), {"bind": str(d), "mode": "ro"})
        self.mounts = m

    def start(self, node: str, argv: list[str], env: dict[str, str], log: Path, cwd: str) -> NodeHandle:
        spec = self.scenario.node(node)
        holder = self.holders[node if self.network != "none" else "lo"]
        cenv = {k: v for k, v in env.items() if k.startswith(ENV_PASS_PREFIX) and k != "DSD_CACHE_DIR"}  # the image's
        cenv.update(PYTHONPATH=img.IMAGE_SRC, PYTHONUNBUFFERED="1", HOME="/tmp")
        if self.model_cache is not None:
            cenv["DSD_MODEL_CACHE"] = str(self.model_cache)
        if self.trace_dir:
            cenv["DSD_TRACES_DIR"] = os.pathsep.join(filter(None, [self.trace_dir, env.get("DSD_TRACES_DIR", "")]))
        kw: dict[str, Any] = {}
        if spec.cpu_share:
            kw["nano_cpus"] = int(spec.cpu_share * 1e9)
        if spec.memory_mb:
            kw["mem_limit"] = f"{spec.memory_mb}m"
            kw["memswap_limit"] = f"{spec.memory_mb}m"  # no swap: a node over its limit is OOM-killed
        t = time.monotonic()
        c = self.client.containers.run(
            self.image,
            [img.IMAGE_PYTHON, *argv[1:]],
            name=f"{PREFIX}{self.tag}-{node}",
            network_mode=f"container:{holder.id}",
            environment=cenv,
            volumes=self.mounts,
            working_dir=img.IMAGE_SRC,
            labels=self._labels(node, "node"),
            detach=True,
            init=True,
            cgroup_parent=CGROUP_PARENT,
            **kw,
        )
        c.reload()
        self.timings.setdefault("node_start_s", [])
        self.timings["node_start_s"].append(time.monotonic() - t)
        h = ContainerHandle(c, log)
        self.containers[node] = h
        return h

    def teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True

        def node_down(h: ContainerHandle) -> None:
            if h.poll() is None:
                _quiet(h.c.kill)
                h.wait(5)
            if not h.log.exists():
                h.collect_log()
            _quiet(h.c.remove, force=True)

        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(node_down, self.containers.values()))
            list(pool.map(lambda c: _quiet(c.remove, force=True), self.holders.values()))
        self.holders.clear()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runtime": "docker", "image": self.image}
        if self.client is not None and self.image:
            _quiet(lambda: out.update(img.image_info(self.client, self.image)))
        limits = {
            n.name: {"cpu_share": n.cpu_share, "memory_mb": n.memory_mb}
            for n in self.scenario.nodes
            if n.role != "switch" and (n.cpu_share or n.memory_mb)
        }
        out["limits"] = limits
        starts = self.timings.get("node_start_s") or []
        out["timings"] = {k: v for k, v in self.timings.items() if k != "node_start_s"}
        if starts:
            out["timings"]["node_start_mean_s"] = sum(starts) / len(starts)
        return out


def remove_containers(owner_alive=None) -> list[str]:
    """Remove every testbed container whose owner is dead (all when owner_alive is None). Returns their names."""
    from testbed.emu.runtime.engine import client

    c = client(timeout=30)
    if c is None:
        return []
    gone = []
    for ct in c.containers.list(all=True, filters={"label": LABEL_RUN}):
        owner = int((ct.labels or {}).get(LABEL_OWNER, "0") or 0)
        if owner_alive is not None and owner_alive(owner):
            continue
        _quiet(ct.remove, force=True)
        gone.append(ct.name)
    return gone


def list_containers() -> list[dict[str, Any]]:
    from testbed.emu.runtime.engine import client

    c = client(timeout=30)
    if c is None:
        return []
    return [
        {"name": ct.name, "owner": int((ct.labels or {}).get(LABEL_OWNER, "0") or 0), "status": ct.status}
        for ct in c.containers.list(all=True, filters={"label": LABEL_RUN})
    ]
