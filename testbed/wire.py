"""Sizes of node messages on the wire: the simulator's link model uses these, the node protocol is tested
against them (tests/test_protocol.py encodes real messages and compares).

Application payload: a msgpack map with a protocol version, message type, request id and a few scalars,
plus token ids as packed int32 (4 bytes each) and, in sampling mode, draft probabilities as top-k
(int32 id, float16 prob) pairs per drafted token. ZeroMQ adds its frame headers (and the ROUTER's identity
frame on the target side). On the wire every TCP segment carries Ethernet + IPv4 + TCP headers with the
timestamp option.
"""

from __future__ import annotations

# Bytes of a message apart from its token arrays: the msgpack body of nodes/protocol.py plus 2 bytes of
# ZeroMQ framing (9 above 255 bytes). Checked against real encodings by tests/test_protocol.py.
MSG_BASE_BYTES = {
    "PREFILL": 30,
    "PREFILL_DONE": 67,
    "VERIFY": 29,
    "VERIFY_RESULT": 70,
    "RELEASE": 16,
    "DONE": 62,  # co-located modes (fused, autoregressive): the finished request's counts, target -> edge
    "HEARTBEAT": 20,  # liveness (testbed/faults.py rule 2): edge -> target and the target's answer
}
TOKEN_BYTES = 4  # int32 token id
TOPK_ENTRY_BYTES = 6  # (int32 id, float16 prob)
SAMPLING_TOPK = 16  # draft probabilities per drafted token sent with VERIFY when models.temperature > 0
MSS = 1448  # TCP payload per segment with timestamps on a 1500-byte MTU
HEADER_BYTES = 66  # Ethernet 14 + IPv4 20 + TCP 20 + timestamp option 12
# A rate-limited link's token bucket (the emulator's tbf `burst`, the simulator's credit after idle): at least two
# full-size frames, or 1 ms at the link's rate, whichever is more.
LINK_BURST_MIN_BYTES = 2 * 1514
LINK_BURST_S = 0.001


def payload_bytes(kind: str, n_tokens: int = 0, topk: int = 0) -> int:
    """Application bytes of one message carrying n_tokens token ids (and top-k probabilities per token)."""
    return MSG_BASE_BYTES[kind] + n_tokens * (TOKEN_BYTES + topk * TOPK_ENTRY_BYTES)


def verify_topk(temperature: float) -> int:
    """Top-k probability entries per drafted token a VERIFY carries: SAMPLING_TOPK in sampling mode, else 0."""
    return SAMPLING_TOPK if temperature > 0 else 0


def wire_bytes(payload: int) -> int:
    """Bytes on the link for a message of `payload` application bytes (segments x headers added)."""
    segments = -(-payload // MSS)
    return payload + segments * HEADER_BYTES


def link_burst_bytes(bw_mbps: float) -> int:
    """Bytes a rate-limited link of bw_mbps sends at line rate after it was idle long enough to fill its bucket.
    A message entering at t after the link last finished sending at f leaves at
    max(f, t - burst x byte time) + bytes x byte time, and never before t (tbf's fluid limit)."""
    return int(max(LINK_BURST_MIN_BYTES, bw_mbps * 1e6 / 8 * LINK_BURST_S))


def idle_serialisation_s(nbytes: int, bw_mbps: float | None) -> float:
    """Seconds a message of nbytes wire bytes spends being serialised on a rate-limited link that was idle long
    enough to fill its bucket: what is beyond the bucket, at the rate (link_burst_bytes's rule with f <= t - burst;
    0 on an unshaped link). A small probe after idle pays nothing, in the emulator's tbf as in the simulator."""
    if not bw_mbps:
        return 0.0
    return max(0, nbytes - link_burst_bytes(bw_mbps)) * 8 / (bw_mbps * 1e6)


def segments(payload: int) -> int:
    return -(-payload // MSS)
