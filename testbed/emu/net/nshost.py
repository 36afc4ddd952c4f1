"""A Mininet host whose network namespace already exists: the one of a container (the docker runtime).

Mininet's host is a shell started by `mnexec -cdn` in a new network namespace; this one's shell is started by
`mnexec -cd nsenter --net=/proc/<pid>/ns/net` in the namespace of process <pid> (the host's holder container).
The shell keeps the machine's mount namespace, so `tc`, `iptables` and the delay line run as for any host;
Mininet moves the host's interfaces into the shell's namespace, i.e. into the container.
"""

from __future__ import annotations

from typing import Any


def netns_host_class(mininet_node_module) -> type:
    Host = mininet_node_module.Host

    class NetnsHost(Host):
        def __init__(self, name: str, netns_pid: int, **params: Any):
            self.netns_pid = int(netns_pid)
            super().__init__(name, inNamespace=True, **params)

        def _popen(self, cmd, **params):
            if self.shell is None and cmd and cmd[0] == "mnexec":  # the shell: join, don't create, a namespace
                opts = cmd[1].replace("n", "")
                cmd = ["mnexec", opts, "nsenter", f"--net=/proc/{self.netns_pid}/ns/net", *cmd[2:]]
            return super()._popen(cmd, **params)

    return NetnsHost
