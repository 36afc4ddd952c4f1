"""DSD testbed: trace-driven network emulation and simulation of distributed speculative decoding."""

__version__ = "0.1.0"
