"""The scenario spec shared by the simulator and the emulator: schema, loading, resolution."""

from testbed.spec.resolve import load_scenario, resolve, spec_to_yaml
from testbed.spec.scenario import Hop, Scenario
from testbed.spec.schema import TopologySpec

__all__ = ["Hop", "Scenario", "TopologySpec", "load_scenario", "resolve", "spec_to_yaml"]
