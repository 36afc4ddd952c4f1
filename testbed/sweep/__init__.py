"""Sweeps: a sweep file's trials (file.py), running one trial (trial.py), the sweep directory (results.py)."""
