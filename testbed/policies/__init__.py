"""Policies shared by the simulator and the nodes: window (gamma), routing, batching."""
