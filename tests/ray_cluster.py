"""A real local Ray cluster for tests: a head node and a worker node (separate raylet processes), both on
127.0.0.1, no dashboard, no usage statistics, session files under the given temp dir. The worker node offers the
testbed_emulation resource. Prints the cluster address, then runs until its stdin closes (the test ended, or
died) and shuts both nodes down.

    python tests/ray_cluster.py TEMP_DIR
"""

import os
import sys

from testbed.runner import EMULATION_RESOURCE, loopback_only_env

os.environ.update(loopback_only_env())  # before Ray is imported: its constants read them

import ray
from ray.cluster_utils import Cluster


def main() -> int:
    temp = sys.argv[1]
    common = {"node_ip_address": "127.0.0.1", "temp_dir": temp, "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**common, "num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(**common, num_cpus=1, resources={EMULATION_RESOURCE: 1})
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    _ = ray
    raise SystemExit(main())
