"""DSD testbed: trace-driven network emulation and simulation of distributed speculative decoding."""

__version__ = "0.1.0"

from testbed import compiled as _compiled

_compiled.guard()  # a stale compiled core (testbed/compiled.py) is never imported
