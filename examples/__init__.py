"""Examples of the Python API, run from the repository root as modules (`python -m examples.NAME`), each run by
tests/test_examples.py."""
