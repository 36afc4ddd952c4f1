"""Fault semantics, written once: what a message does during an outage, when a request fails, when a draft
re-routes, what a restarted target knows. The simulator implements these rules (testbed/sim), the nodes and
the emulator produce them with real TCP, real processes and real kills (nodes/, testbed/emu); the rules are
documented in README.md ("Changing networks and faults").

1. Outage. A path is down for a message when any link of it is down at the moment the message is sent
   (the emulator's delay line sees a packet when it enters the path). TCP then retransmits: the first
   retransmission after one RTO (rto_s: 200 ms + the path's RTT + a 40 ms delayed ACK), each further one after twice
   the previous
   wait (exponential backoff, capped at RTO_MAX_S), as Linux does; the message crosses at the first retransmission at
   which the path is up.
   Messages sent on the same connection meanwhile wait behind it (one byte stream): they leave with it.
   A packet already in flight when the link goes down completes its crossing.
2. Silence. A draft declares a target dead after `run.peer_timeout_s` (default: run.request_timeout_s)
   without hearing from it: the target crashed, or the path is down (a partition looks the same).
   The draft then re-routes each of its unfinished requests on that target to another reachable target it
   believes alive (its routing policy chooses among them): the request starts again there with a prefill of
   its prompt plus the tokens produced so far (the edge keeps what the user has seen), and continues.
   With no alive target left the request fails (status `failed`). A new request arriving while every
   reachable target is believed dead fails at once.
3. A dead target becomes alive again for a draft when the draft hears from it (a restarted target answering
   a heartbeat, a link that came back): in the simulator, at the end of the outage / at the restart.
4. A restarted target knows nothing: its queue, batches and request state were lost with the process.
   A VERIFY for a request it does not know is answered with an error, on which the draft re-routes that
   request at once (rule 2, the restarted target included).
5. Request timeout. A request whose target has not answered for `run.request_timeout_s` fails.
6. A crashed draft loses its requests: they end as `failed` at the crash; requests arriving at it while it
   is down fail at once. After a restart it takes new requests again.
Nothing hangs: whatever is left when the run ends (last arrival + run.drain_timeout_s) is `unfinished`;
partial results are kept.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed.spec.schema import RunSpec

RTO_MIN_S = 0.2  # Linux TCP_RTO_MIN
RTO_MAX_S = 120.0  # Linux TCP_RTO_MAX
DELAYED_ACK_S = (
    0.04  # Linux's minimum delayed-ACK timeout (TCP_DELACK_MIN): inflates the RTT samples of one-way traffic
)


def peer_timeout_s(run: RunSpec) -> float:
    """Silence after which a draft declares its target dead (rule 2)."""
    return run.peer_timeout_s if run.peer_timeout_s is not None else run.request_timeout_s


def rto_s(path_rtt_s: float) -> float:
    """The first retransmission timeout of a connection on a path of this RTT, as Linux sets it with a steady RTT
    (tcp_set_rto: srtt + max(4 mdev, TCP_RTO_MIN)), srtt including a delayed ACK. Measured on the emulator (a 1 s
    outage of a 24 ms RTT path): the first delivery after the outage came 7 RTOs of ~0.26 s after the send
    (backoff 1 + 2 + 4); this gives 0.264 s."""
    return RTO_MIN_S + path_rtt_s + DELAYED_ACK_S


def retransmit_until(t: float, rto: float, is_down: Callable[[float], bool]) -> float:
    """Rule 1: a message sent at t on a path that is down at t leaves at the first retransmission at which
    the path is up: t + rto, t + 3 rto, t + 7 rto, ... (waits doubling, each capped at RTO_MAX_S).
    Returns t itself if the path is up at t."""
    wait = rto
    while is_down(t):
        t += wait
        wait = min(2.0 * wait, RTO_MAX_S)
    return t
