"""DSD-Sim: the discrete-event simulator of distributed speculative decoding.

Imports the shared core only (spec, policies, acceptance, compute, metrics, traces): no ZeroMQ, no
Mininet, no subprocesses, no wall clock.
"""

from testbed.sim.run import SimResult, simulate

__all__ = ["SimResult", "simulate"]
