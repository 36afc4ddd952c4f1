"""Analysis of run directories (DESIGN.md "run directory contract"): compare, plots, HTML report.

Works from the tables of a run directory only (DIR/sim/, DIR/emu/); imports neither executor.
- `analysis.compare`: metrics recomputed through `testbed.metrics`, relative errors, tolerances (no plotting).
- `analysis.plots`: matplotlib (Agg) figures as PNG bytes.
- `analysis.report`: the self-contained report.html (PNGs embedded as data URIs, also written to DIR/plots/).
- `analysis.compute_overlap`: real models only: how much co-located compute slowed verify batches and drafts.
- `analysis.awc_report`: the AWC validation (simulated vs emulated gains per scenario) of bench/awc_emu_check.py.
"""
