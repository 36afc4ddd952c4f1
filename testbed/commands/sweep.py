"""Run a sweep: a grid or random search over spec fields (--set paths), topologies, window policies and seeds,
each trial a simulation, an emulation or both (`run`), on Ray (a private local cluster by default, --address
joins a running one; --workers 0 runs serially in this process).

Simulation trials run in parallel, one CPU each. An emulation trial needs root and the whole host: it holds the
`testbed_emulation` resource (one per host; a local cluster offers one, cluster hosts declare it with
`ray start ... --resources='{"testbed_emulation": 1}'`) and all CPUs of the smallest such host.

Resumable: a trial with a record in OUT/records/ is not run again (--retry-failed reruns failed ones). A failed
trial is recorded with its error and the sweep goes on. Writes OUT/trials.parquet (parameters x metrics x fidelity
errors) and OUT/summary.html. Progress: a bar with ETA on a terminal, otherwise a line every --progress-every
seconds. Exit status: 0 when every trial succeeded, 1 when some failed (all recorded), 2 for a bad sweep file,
130 when interrupted (finished trials kept; rerun to resume)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from testbed.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Path, help="sweep file (YAML; see testbed/sweep/file.py and topologies/sweeps/)")
    p.add_argument(
        "--out", type=Path, default=None, help="sweep directory (default: runs/sweep-<name>); rerun to resume"
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (e.g. HEAD:6379 or auto); default: a private local cluster on 127.0.0.1",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="CPUs of the local cluster (0: serially in this process, no Ray)"
    )
    p.add_argument("--retry-failed", action="store_true", help="run failed and partial trials again")
    p.add_argument("--dry-run", action="store_true", help="list the trials and exit")
    p.add_argument(
        "--progress-every",
        type=float,
        default=30.0,
        help="seconds between progress lines when stderr is not a terminal",
    )
    p.add_argument("--no-report", action="store_true", help="do not write summary.html")


def run(args: argparse.Namespace) -> int:
    from testbed.files import write_text
    from testbed.runner import EMULATION_RESOURCE, Runner, RunnerConfig
    from testbed.sweep.file import load_sweep
    from testbed.sweep.results import load_record, save_record, table, write_table
    from testbed.sweep.trial import TrialJob, argv_of, run_trial

    if args.workers < 0:
        raise InputError("--workers", "must be >= 0")
    sweep = load_sweep(args.sweep)
    out = (args.out or Path("runs") / f"sweep-{sweep.name}").resolve()
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "--out exists and is not a directory")
    jobs = {t.id: TrialJob(t, str(out / "trials" / t.id), os.getcwd(), sweep.trial_timeout_s) for t in sweep.trials}
    if args.dry_run:
        for t in sweep.trials:
            print(t.id, " ".join(["python -m testbed", *argv_of(jobs[t.id])]))
        print(f"{len(sweep.trials)} trials; swept: {', '.join(sweep.dims) or 'nothing (replicates only)'}")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "sweep.yaml", args.sweep.read_text())
    records = {t.id: r for t in sweep.trials if (r := load_record(out, t.id)) is not None}
    if args.retry_failed:
        records = {k: r for k, r in records.items() if r["status"] == "ok"}
    todo = [t for t in sweep.trials if t.id not in records]
    print(
        f"sweep {sweep.name}: {len(sweep.trials)} trials, {len(records)} finished earlier, {len(todo)} to run -> {out}"
    )

    emulations = [t for t in todo if t.mode != "sim"]
    interrupted = False
    t_start = time.perf_counter()
    with Runner(RunnerConfig(address=args.address, workers=args.workers)) as runner:
        print(f"running on: {runner.mode} (started in {time.perf_counter() - t_start:.1f} s)")
        _write_sweep_json(out, sweep, jobs, runner.mode)
        slots, emu_cpus = runner.emulation_slots()
        if emulations and slots == 0:
            raise InputError(
                args.address or "ray",
                f"{len(emulations)} emulation trials, but no host of the cluster "
                f"offers the {EMULATION_RESOURCE} resource (ray start ... "
                f"--resources='{{\"{EMULATION_RESOURCE}\": 1}}')",
            )

        def resources(job: TrialJob) -> dict[str, float]:
            if job.trial.mode == "sim":
                return {"CPU": 1}
            return {"CPU": max(emu_cpus, 1), EMULATION_RESOURCE: 1}

        progress = SweepProgress(len(todo), args.progress_every)
        t0 = time.perf_counter()  # the trials' part: without the runner's start-up and the table / report
        try:
            for outcome in runner.map(run_trial, [jobs[t.id] for t in todo], resources):
                trial = todo[outcome.index]
                rec = (
                    outcome.value
                    if outcome.error is None
                    else {
                        "id": trial.id,
                        "status": "failed",
                        "error": outcome.error,
                        "metrics": {},
                        "wall_s": None,
                        "host": None,
                        "run_dir": jobs[trial.id].run_dir,
                    }
                )
                rec["params"] = trial.param_dict()
                save_record(out, rec)
                records[trial.id] = rec
                progress.done(
                    rec["status"], f"{trial.id} {rec['status']}" + (f": {rec['error']}" if rec.get("error") else "")
                )
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.close()
            wall = time.perf_counter() - t0
    df = table(sweep, records)
    path = write_table(out, df)
    report = None
    if not args.no_report and not df.empty:
        from analysis.sweep_report import build

        report = build(out)
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    ran = len(records) - (len(sweep.trials) - len(todo))
    rate = f", {60 * ran / wall:.1f} trials/min" if ran and wall > 0 else ""
    print(
        f"{len(df)}/{len(sweep.trials)} trials finished ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
        f"this session: {ran} in {wall:.1f} s{rate}"
    )
    print(f"table: {path}" + (f"\nsummary: {report}" if report else ""))
    if interrupted:
        print("interrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if counts.get("ok", 0) == len(sweep.trials) else 1


def _write_sweep_json(out: Path, sweep, jobs, mode: str) -> None:
    from testbed.files import write_json
    from testbed.sweep.trial import argv_of

    write_json(
        out / "sweep.json",
        {
            "name": sweep.name,
            "source": sweep.source,
            "search": sweep.spec.search,
            "dims": list(sweep.dims),
            "runner": mode,
            "trials": [
                {
                    "id": t.id,
                    "params": t.param_dict(),
                    "mode": t.mode,
                    "argv": ["python", "-m", "testbed", *argv_of(jobs[t.id])],
                }
                for t in sweep.trials
            ],
        },
    )


class SweepProgress:
    """A bar with ETA on a terminal; otherwise a line every `every` seconds (and a last one at the end)."""

    def __init__(self, total: int, every: float):
        self.total, self.every = total, every
        self.n = self.failed = 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if total and sys.stderr.isatty():
            from testbed.commands.common import progress_bar

            self.bar = progress_bar("sweep")
            self.bar.start()
            self.task = self.bar.add_task("trials", total=total)

    def done(self, status: str, line: str) -> None:
        self.n += 1
        self.failed += status != "ok"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.n, description=f"trials ({self.failed} failed)")
            if status != "ok":
                self.bar.console.print(line)
            return
        if status != "ok":
            print(line, file=sys.stderr, flush=True)
        now = time.perf_counter()
        if now - self.last >= self.every or self.n == self.total:
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float) -> str:
        el = now - self.t0
        rate = self.n / el if el > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        return (
            f"sweep: {self.n}/{self.total} trials ({self.failed} failed), {60 * rate:.1f} trials/min, "
            f"elapsed {_hms(el)}, ETA {_hms(eta)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _hms(s: float) -> str:
    if math.isnan(s):
        return "?"
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
