"""Calibration of the compute model and the acceptance model from real models (`python -m testbed calibrate`).

- `fit`: non-negative least-squares fits of the linear cost terms of testbed.compute (pure numpy), with the
  fit quality (R², max error), and the profile writer;
- timings of real draft steps, target prefills and target verify batches over a grid of batch size, gamma
  and context live next to the backend they measure (nodes.backends.hf_bench);
- `record`: per-request acceptance sequences of a real draft/target pair (greedy), saved as `.npz` and
  replayed by testbed.acceptance_recorded.

`fit` imports nothing beyond numpy and the shared core; `record` and the timings need the `models` extra.
"""
