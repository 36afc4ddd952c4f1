"""The dependency rules of docs/DESIGN.md ("Dependency rules"), checked on every module's imports (the AST:
module-level and function-level imports alike).

Every module of testbed/, nodes/, analysis/ and traces/ belongs to exactly one layer below; a new module that
fits none fails `test_every_module_has_a_layer` until it is placed (and so is held to that layer's rules).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The shared core: what both executors use (spec, policies, acceptance, compute model, metrics, tables, trace
# loading, ...).
CORE = (
    "testbed/__init__.py",
    "testbed/spec/",
    "testbed/policies/",
    "testbed/acceptance.py",
    "testbed/acceptance_recorded.py",
    "testbed/compiled.py",
    "testbed/compute.py",
    "testbed/errors.py",
    "testbed/faults.py",
    "testbed/files.py",
    "testbed/metrics.py",
    "testbed/progress.py",
    "testbed/rounds.py",
    "testbed/schedule.py",
    "testbed/tables.py",
    "testbed/wire.py",
    "testbed/workload.py",
    "traces/",
)
LAYERS: dict[str, tuple[str, ...]] = {
    "core": CORE,
    "sim": ("testbed/sim/",),
    "emu": ("testbed/emu/",),
    "nodes": ("nodes/",),
    "analysis": ("analysis/",),
    # wiring and tools: the CLI and its commands, the run directory writer, calibration, AWC training, the Ray task
    # runner and sweeps (which run the CLI's commands as trials), the random-scenario generator
    "tools": (
        "testbed/__main__.py",
        "testbed/cli.py",
        "testbed/commands/",
        "testbed/rundir.py",
        "testbed/calibrate/",
        "testbed/distill.py",
        "testbed/awc/",
        "testbed/runner.py",
        "testbed/sweep/",
        "testbed/scenariogen.py",
        "testbed/compile_core.py",
    ),
}

EXECUTORS = ("testbed.sim", "testbed.emu", "nodes")
CLI = ("testbed.cli", "testbed.commands", "testbed.__main__")
TRAINING = ("testbed.awc", "testbed.calibrate", "ray", "torch")
SYSTEM = ("zmq", "mininet", "docker")

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": EXECUTORS + CLI + TRAINING + SYSTEM + ("analysis", "testbed.rundir"),
    "sim": ("testbed.emu", "nodes", "analysis", "subprocess", "socket", "threading", "datetime")
    + CLI
    + TRAINING
    + SYSTEM,
    "nodes": ("testbed.emu", "testbed.sim", "analysis", "testbed.rundir", "mininet", "docker") + CLI + TRAINING[:2],
    "emu": ("nodes", "testbed.sim", "analysis") + CLI + TRAINING,
    "analysis": EXECUTORS + CLI + SYSTEM,
}
# The simulator never reads the wall clock to decide anything: `time` only for time.perf_counter, which measures
# its own run time (SimResult.wall_s, a benchmark figure that no result depends on).
SIM_TIME_ALLOWED = {"perf_counter"}


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def _modules() -> list[Path]:
    out = []
    for top in ("testbed", "nodes", "analysis", "traces"):
        out += sorted((ROOT / top).rglob("*.py"))
    return out


def _layer(path: Path) -> str | None:
    rel = path.relative_to(ROOT).as_posix()
    hits = [
        name
        for name, prefixes in LAYERS.items()
        if any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in prefixes)
    ]
    # the most specific prefix wins (testbed/__init__.py vs testbed/...)
    return hits[0] if len(hits) == 1 else (None if not hits else "ambiguous:" + ",".join(hits))


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.append((n.lineno, n.module))
            out += [(n.lineno, f"{n.module}.{a.name}") for a in n.names]
    return out


def _matches(module: str, banned: str) -> bool:
    return module == banned or module.startswith(banned + ".")


def test_every_module_has_a_layer():
    bad = {
        p.relative_to(ROOT).as_posix(): _layer(p)
        for p in _modules()
        if _layer(p) in (None,) or str(_layer(p)).startswith("ambiguous")
    }
    assert not bad, f"modules without exactly one layer (add them to LAYERS in {Path(__file__).name}): {bad}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_import_rules(layer):
    violations = []
    for path in _modules():
        if _layer(path) != layer:
            continue
        tree = _tree(path)
        rel = path.relative_to(ROOT).as_posix()
        for line, mod in _imports(tree):
            for banned in FORBIDDEN[layer]:
                if _matches(mod, banned):
                    violations.append(f"{rel}:{line} imports {mod} ({layer} must not import {banned})")
        if layer == "sim":
            for n in ast.walk(tree):
                if isinstance(n, ast.ImportFrom) and n.module == "time":
                    violations += [
                        f"{rel}:{n.lineno} from time import {a.name}" for a in n.names if a.name not in SIM_TIME_ALLOWED
                    ]
                if (
                    isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name)
                    and n.value.id == "time"
                    and n.attr not in SIM_TIME_ALLOWED
                ):
                    violations.append(f"{rel}:{n.lineno} time.{n.attr}: the simulator does not read the wall clock")
    assert not violations, "\n".join(violations)


def test_the_rules_catch_a_violation():
    """The checker itself: a simulator module importing the emulator, and one reading the wall clock."""
    tree = ast.parse("import time\nfrom testbed.emu.orchestrate import emulate\nx = time.monotonic()\n")
    mods = [m for _, m in _imports(tree)]
    assert any(_matches(m, "testbed.emu") for m in mods)
    attrs = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert "monotonic" in attrs and "monotonic" not in SIM_TIME_ALLOWED
    assert _layer(ROOT / "testbed" / "sim" / "run.py") == "sim"
    assert _layer(ROOT / "testbed" / "__init__.py") == "core"
