"""Independent tasks on Ray (a private local cluster by default, or a running cluster) or serially, saying which.

One runner for everything that fans out: `testbed sweep` trials and AWC label generation / evaluation.

- Local (default): `ray.init` starts a private single-machine cluster with `workers` CPUs that stops with the
  process. It binds only to 127.0.0.1 (Ray's loopback mode), starts no dashboard, sends no usage statistics and
  keeps its files under its own temp dir. It offers one EMULATION_RESOURCE slot: this host can run one emulation
  at a time.
- Cluster (`address`, e.g. "10.0.0.5:6379" or "auto"): joins it; hosts that may run emulations were started with
  `ray start ... --resources='{"testbed_emulation": 1}'` and have the testbed installed at the same path.
- Serial (`workers=0`, no address): in this process, one task after the other.

There is no silent fallback: when Ray cannot start, the error says so; `mode` tells how tasks ran.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

EMULATION_RESOURCE = "testbed_emulation"
ROOT = Path(__file__).resolve().parent.parent  # the repository (or site-packages) holding `testbed`
# Environment that local workers must see like the driver does (trace folders, model caches).
PASS_ENV = ("DSD_TRACES_DIR", "DSD_NET_TRACES_DIR", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def loopback_only_env() -> dict[str, str]:
    """Environment that keeps a Ray started from this process on 127.0.0.1 and quiet: Ray's single-machine
    (loopback) mode, no usage statistics. Must be in os.environ before Ray starts its processes."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]") in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class RunnerConfig:
    """Where tasks run."""

    address: str | None = field(default=None, metadata={"help": "Ray cluster to join (None: a private local one)"})
    workers: int = field(default=2, metadata={"help": "CPUs of the local cluster; 0 = serial in this process"})
    temp_dir: str | None = field(
        default=None, metadata={"help": "Ray's session files of a local cluster (default: /tmp/testbed-ray-<uid>)"}
    )

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be >= 0")


@dataclass
class Outcome:
    """What one task returned, or the error that ended it (a worker that died, an exception)."""

    index: int
    value: Any = None
    error: str | None = None


class Runner:
    """`with Runner(cfg) as r: for out in r.map(fn, items, resources): ...` (outcomes in completion order)."""

    def __init__(self, cfg: RunnerConfig = RunnerConfig()):
        self.cfg = cfg
        self.mode = "serial (in this process)"
        self._ray = None
        self._started = False

    @property
    def serial(self) -> bool:
        return self.cfg.address is None and self.cfg.workers == 0

    def __enter__(self) -> Self:
        if self.serial:
            return self
        loopback = self.cfg.address is None or is_loopback(self.cfg.address)
        if loopback:  # a cluster on this machine only: this driver must take 127.0.0.1 as its address too
            os.environ.update(loopback_only_env())
        try:
            import ray
        except ImportError as e:  # a regular dependency: a broken install, not a reason to go serial
            raise RuntimeError(
                f"Ray is not installed ({e}); `make setup` installs it, --workers 0 runs serially"
            ) from None
        self._ray = ray
        if ray.is_initialized():
            self.mode = "ray (already initialised by the caller)"
            return self
        if loopback:
            import ray._private.ray_constants as rc

            rc.ENABLE_RAY_CLUSTER = False  # if Ray was imported before the environment was set
        if self.cfg.address is None:
            temp = self.cfg.temp_dir or f"/tmp/testbed-ray-{os.getuid()}"
            env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
            # address="local": always a new private cluster, never one found on this machine or in RAY_ADDRESS
            ray.init(
                address="local",
                num_cpus=self.cfg.workers,
                resources={EMULATION_RESOURCE: 1},
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp,
                logging_level="WARNING",
                log_to_driver=False,
                configure_logging=True,
                runtime_env={"env_vars": env},
            )
            self.mode = f"ray local ({self.cfg.workers} CPUs, 127.0.0.1)"
        else:
            ray.init(address=self.cfg.address, logging_level="WARNING", log_to_driver=False)
            self.mode = f"ray cluster {self.cfg.address} ({self.describe_cluster()})"
        self._started = True
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def describe_cluster(self) -> str:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        res = self._ray.cluster_resources()
        return (
            f"{len(nodes)} nodes, {int(res.get('CPU', 0))} CPUs, {int(res.get(EMULATION_RESOURCE, 0))} emulation slots"
        )

    def emulation_slots(self) -> tuple[int, int]:
        """(hosts offering the emulation resource, CPUs of the smallest of them); (1, os.cpu_count()) serially."""
        if self.serial:
            return 1, os.cpu_count() or 1
        cpus = [
            int(n["Resources"].get("CPU", 0))
            for n in self._ray.nodes()
            if n.get("Alive") and n["Resources"].get(EMULATION_RESOURCE, 0) >= 1
        ]
        return len(cpus), (min(cpus) if cpus else 0)

    def map(
        self, fn: Callable[[Any], Any], items: list[Any], resources: Callable[[Any], dict[str, float]] | None = None
    ) -> Iterator[Outcome]:
        """fn(item) for every item; `resources(item)` -> {"CPU": n, other: k} that its task holds (default 1 CPU).
        Yields each outcome as it completes."""
        if self.serial:
            for i, x in enumerate(items):
                try:
                    yield Outcome(i, fn(x))
                except Exception as e:  # noqa: BLE001 - recorded, the others go on
                    yield Outcome(i, error=f"{type(e).__name__}: {e}")
            return
        ray = self._ray
        remote = ray.remote(_call)
        fn_ref = ray.put(fn)
        refs = {}
        for i, x in enumerate(items):
            req = dict(resources(x)) if resources else {}
            cpus = req.pop("CPU", 1)
            refs[remote.options(num_cpus=cpus, resources=req or None, max_retries=0).remote(fn_ref, x)] = i
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                try:
                    yield Outcome(refs[r], ray.get(r))
                except ray.exceptions.RayTaskError as e:
                    yield Outcome(refs[r], error=f"{type(e.cause).__name__}: {e.cause}")
                except ray.exceptions.RayError as e:  # a worker or node died
                    yield Outcome(refs[r], error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _call(fn: Callable[[Any], Any], x: Any) -> Any:
    return fn(x)


def host() -> str:
    return socket.gethostname()


def ordered(
    runner: Runner, fn: Callable[[Any], Any], items: list[Any], progress: Callable[[int, int], None] | None = None
) -> list[Any]:
    """[fn(x) for x in items] in item order; the first task error is raised (after all tasks ended)."""
    results: list[Any] = [None] * len(items)
    errors: list[str] = []
    for done, out in enumerate(runner.map(fn, items), 1):
        if out.error is not None:
            errors.append(f"task {out.index}: {out.error}")
        results[out.index] = out.value
        if progress is not None:
            progress(done, len(items))
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(items)} tasks failed; first: {errors[0]}")
    return results


__all__ = ["EMULATION_RESOURCE", "Outcome", "Runner", "RunnerConfig", "host", "loopback_only_env", "ordered"]
