"""Fault semantics, written once: what a message does during an outage, when a request fails, when a draft
re-routes, what a restarted target knows. The simulator implements these rules (testbed/sim), the nodes and
the emulator produce them with real TCP, real processes and real kills (nodes/, testbed/emu); the rules are
documented in README.md ("Changing networks and faults").

1. Outage. A path is down for a message when any link of it is down at the moment the message is sent
   (the emulator's delay line sees a packet when it enters the path). TCP then retransmits: the first
   retransmission is the tail-loss probe, one PTO after the send (probe_timeout_s: 2 srtt + 200 ms for a lone
   segment, at most the RTO), then the retransmission timer runs from the probe: after the connection's RTO at the
   send (RttEstimator.rto: Linux's srtt + rttvar, fed with the connection's RTT samples, see "RTT samples" below),
   each further wait twice the previous (exponential backoff, capped at RTO_MAX_S), as Linux does; the message
   crosses at the first retransmission at which the path is up. (Measured on the emulator, ss -ti of a draft's
   connection in flaky-wan's 3 s outage: the first backoff came 2 RTOs after the send, then 2, 4, 8 RTOs.)
   Messages sent on the same connection meanwhile wait behind it (one byte stream). A retransmission is one
   segment and the congestion window one segment after an RTO: the rest of the message and what waits behind it
   leave when that segment's ACK is back, one round trip after it got through.
   A packet already in flight when the link goes down completes its crossing.
   Loss. A message of n segments on a link with loss probability p is hit with probability 1 - (1 - p)^n; the lost
   segment is recovered as Linux does (loss_recovery_s): a segment followed by others of the message by RACK once a
   later one is acknowledged (srtt + srtt / 4 after its send), a lost tail by the tail-loss probe (PTO = 2 srtt +
   200 ms when it is the only segment in flight, else 2 srtt + 2 ms, at most the RTO); a lost retransmission by the
   RTO, doubling.
   RTT samples (RttEstimator.sample, Linux tcp_rtt_estimator + tcp_set_rto): a message that arrived is acknowledged
   by the receiver when it next sends on the connection (the ACK rides on it), at the latest DELAYED_ACK_S after
   the arrival (delayed ACK), at once when two segments wait for an ACK; the sample is from the (re)transmission of
   the oldest message acknowledged to the ACK's arrival (the ACK's crossing: the reverse path's delay in force).
2. Silence. A draft hears from a target with every message it receives from it (a reply, an error, a heartbeat,
   stale or not). When it has sent a target nothing for heartbeat_s it sends it a HEARTBEAT, which a live target
   answers. Every housekeeping_s it checks its targets: one not heard from for more than `run.peer_timeout_s`
   (default: run.request_timeout_s) is declared dead - the target crashed, or the path is down (a partition looks
   the same). Detection therefore comes between peer_timeout and peer_timeout + housekeeping_s after the last
   message heard, which may be up to about a heartbeat (plus a round trip) before the crash.
   The draft then re-routes each of its unfinished requests on that target to another reachable target it
   believes alive (its routing policy chooses among them): the request starts again there with a prefill of
   its prompt plus the tokens produced so far (the edge keeps what the user has seen), and continues.
   With no alive target left the request fails (status `failed`). A new request arriving while every
   reachable target is believed dead fails at once.
3. A dead target becomes alive again for a draft when the draft hears from it (a restarted target answering
   a heartbeat, a link that came back and carries the answer).
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

from collections import deque
from collections.abc import Callable

from testbed.spec.schema import RunSpec

RTO_MIN_S = 0.2  # Linux TCP_RTO_MIN
RTO_MAX_S = 120.0  # Linux TCP_RTO_MAX
DELAYED_ACK_S = 0.04  # Linux's minimum delayed-ACK timeout (TCP_DELACK_MIN)
HEARTBEAT_MAX_S = 0.5
HOUSEKEEPING_MAX_S = 0.1
TIMEOUT_INIT_S = 1.0  # Linux TCP_TIMEOUT_INIT: the RTO before the first RTT sample
TIMEOUT_MIN_S = 0.002  # Linux TCP_TIMEOUT_MIN: the tail-loss probe's margin with several segments in flight


def peer_timeout_s(run: RunSpec) -> float:
    """Silence after which a draft declares its target dead (rule 2)."""
    return run.peer_timeout_s if run.peer_timeout_s is not None else run.request_timeout_s


def heartbeat_s(peer_timeout: float) -> float:
    """Rule 2: a draft that has sent a target nothing for this long sends it a HEARTBEAT."""
    return min(HEARTBEAT_MAX_S, peer_timeout / 4)


def housekeeping_s(heartbeat: float) -> float:
    """Rule 2: how often a draft checks its targets' silence (and sends due heartbeats)."""
    return min(HOUSEKEEPING_MAX_S, heartbeat / 2)


class RttEstimator:
    """One connection's sender-side RTT estimator and retransmission timeout, as Linux computes them
    (net/ipv4/tcp_input.c tcp_rtt_estimator, include/net/tcp.h __tcp_set_rto: rto = srtt + rttvar, where rttvar is
    at least tcp_rto_min and follows the largest smoothed deviation (4 mdev) of the last flight, decaying by a quarter
    of the excess per flight). Checked against the kernel's own estimator on an emulated path (README)."""

    __slots__ = ("srtt", "mdev", "mdev_max", "rttvar", "flight_from")

    def __init__(self) -> None:
        self.srtt = 0.0  # no sample yet
        self.mdev = 0.0  # Linux's mdev_us: 4 x the smoothed mean deviation
        self.mdev_max = 0.0
        self.rttvar = 0.0
        self.flight_from = 0.0  # rtt_seq: data sent from then on starts a new flight when it is acknowledged

    def sample(self, rtt: float, newest_sent: float, now: float) -> None:
        """An ACK arriving at `now` measured `rtt`; the newest data it acknowledges was sent at `newest_sent`."""
        if self.srtt > 0.0:
            err = rtt - self.srtt
            self.srtt += err / 8.0
            e = abs(err) - self.mdev / 4.0
            if err < 0.0 and e > 0.0:
                e /= 8.0  # the RTT fell: a finer gain, so the RTO does not grow (Linux: an Eifel-like rule)
            self.mdev += e
            if self.mdev > self.mdev_max:
                self.mdev_max = self.mdev
                if self.mdev_max > self.rttvar:
                    self.rttvar = self.mdev_max
            if newest_sent >= self.flight_from:  # after(snd_una, rtt_seq): a flight ended
                if self.mdev_max < self.rttvar:
                    self.rttvar -= (self.rttvar - self.mdev_max) / 4.0
                self.flight_from = now
                self.mdev_max = RTO_MIN_S
        else:
            self.srtt = rtt
            self.mdev = 2.0 * rtt
            self.rttvar = self.mdev_max = max(self.mdev, RTO_MIN_S)
            self.flight_from = now

    def rto(self) -> float:
        """The retransmission timeout now (TCP_TIMEOUT_INIT before any sample), capped at RTO_MAX_S."""
        return min(self.srtt + self.rttvar, RTO_MAX_S) if self.srtt > 0.0 else TIMEOUT_INIT_S


def probe_timeout_s(est: RttEstimator, alone: bool) -> float:
    """Linux's tail-loss probe timeout (tcp_output.c tcp_schedule_loss_probe): 2 srtt + (tcp_rto_min when one
    segment is in flight, else TCP_TIMEOUT_MIN), at most the RTO (the probe never comes after the RTO would)."""
    rto = est.rto()
    if est.srtt <= 0.0:
        return rto
    return min(2.0 * est.srtt + (RTO_MIN_S if alone else TIMEOUT_MIN_S), rto)


def loss_recovery_s(est: RttEstimator, tail: bool, alone: bool) -> float:
    """Rule 1, loss: how long after its transmission a lost segment is sent again (Linux with SACK, RACK
    (tcp_recovery 1) and tail-loss probes (tcp_early_retrans 3), tcp_output.c tcp_schedule_loss_probe): a segment
    followed by others is declared lost by RACK when a later one is acknowledged, one srtt plus the reordering window
    (min_rtt / 4, taken as srtt / 4) after it was sent; a tail is probed after PTO = 2 srtt + (tcp_rto_min when it
    is the only segment in flight, else TCP_TIMEOUT_MIN), at most the RTO."""
    if not tail and est.srtt > 0.0:
        return min(1.25 * est.srtt, est.rto())
    return probe_timeout_s(est, alone)


class AckClock:
    """One direction of a connection in the simulator: the sender's RttEstimator, fed by the messages that arrived
    and when the receiver acknowledges them (rule 1, "RTT samples"). `back(t)` is the ACK's crossing time at t (the
    reverse path's one-way delay)."""

    __slots__ = ("est", "unacked", "segs", "back")

    def __init__(self, back: Callable[[float], float]):
        self.est = RttEstimator()
        self.unacked: deque[tuple[float, float, int]] = deque()  # (sent, arrived, segments) not yet acknowledged
        self.segs = 0  # their segments
        self.back = back

    def arrived(self, sent: float, at: float, segs: int) -> None:
        """A message (re)transmitted at `sent` arrived at `at` (arrivals come in order)."""
        self.settle(at)
        self.unacked.append((sent, at, segs))
        self.segs += segs
        if self.segs >= 2:  # a second segment waiting: acknowledged at once
            self._ack(at)

    def receiver_sends(self, t: float) -> None:
        """The receiver sends on the connection at t: the ACK of what arrived by then rides on it."""
        self.settle(t)
        if self.unacked and self.unacked[0][1] <= t:
            self._ack(t)

    def settle(self, t: float) -> None:
        """Delayed ACKs due by t."""
        while self.unacked and self.unacked[0][1] + DELAYED_ACK_S <= t:
            self._ack(self.unacked[0][1] + DELAYED_ACK_S)

    def rto(self, t: float) -> float:
        self.settle(t)
        return self.est.rto()

    def _ack(self, at: float) -> None:
        q = self.unacked
        oldest = newest = q[0][0]
        while q and q[0][1] <= at:
            newest, _, n = q.popleft()
            self.segs -= n
        back = at + self.back(at)
        self.est.sample(back - oldest, newest, back)


def retransmit_until(t: float, rto: float, is_down: Callable[[float], bool], pto: float | None = None) -> float:
    """Rule 1: a message sent at t on a path that is down at t leaves at the first retransmission at which
    the path is up: the probe at t + pto, then t + pto + rto, t + pto + 3 rto, ... (waits doubling, each capped at
    RTO_MAX_S); without a probe (pto None) t + rto, t + 3 rto, ... Returns t itself if the path is up at t."""
    if not is_down(t):
        return t
    if pto is not None:
        t += pto
    wait = rto
    while is_down(t):
        t += wait
        wait = min(2.0 * wait, RTO_MAX_S)
    return t
