"""Training and evaluation of Adaptive Window Control (AWC): labels from DSD-Sim rollouts (`dataset`),
parallel generation on Ray (`ray_runner`), torch training (`train`), simulation / emulation evaluation
(`evaluate`). The policy itself (inference, numpy only) is `testbed.policies.awc`."""
