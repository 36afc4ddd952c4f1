"""The node wire protocol: one ZeroMQ frame per message, a msgpack map with a version and a type.

Targets bind a ROUTER, drafts connect one DEALER per target (identity = the draft's node name). Every
message is a msgpack map; token ids travel as packed little-endian int32 arrays (msgpack `bin`), so a
message's size on the wire is its real size: see nodes/README.md for every message and field, and
testbed/wire.py for the size model the simulator uses (tests/test_protocol.py checks they agree).

`decode` validates everything it returns: a frame that is not a msgpack map, has the wrong version, an
unknown type, a missing or ill-typed field, raises `ProtocolError(reason)`; nodes count and log those and
carry on. Encoding uses one reusable `Packer` per process; all encoders return bytes.
"""

from __future__ import annotations

import msgpack

VERSION = 1

# Message types (the "t" field).
HELLO = 1  # draft -> target on connect; target -> draft in reply
BYE = 2  # either way: the sender is leaving
HEARTBEAT = 3  # draft -> target when idle; target answers each one
PREFILL = 4  # draft -> target: a new request's prompt
PREFILL_DONE = 5  # target -> draft: the first token
VERIFY = 6  # draft -> target: gamma draft tokens at output position p
VERIFY_RESULT = 7  # target -> draft: accepted count and the next target token
RELEASE = 8  # draft -> target: forget the request
ERROR = 9  # target -> draft: the request cannot be served (unknown, bad position, ...)
DONE = 10  # target -> draft (co-located modes): the request is complete, with its round counts

NAMES = {
    HELLO: "HELLO",
    BYE: "BYE",
    HEARTBEAT: "HEARTBEAT",
    PREFILL: "PREFILL",
    PREFILL_DONE: "PREFILL_DONE",
    VERIFY: "VERIFY",
    VERIFY_RESULT: "VERIFY_RESULT",
    RELEASE: "RELEASE",
    ERROR: "ERROR",
    DONE: "DONE",
}

TO_TARGET = frozenset({HELLO, BYE, HEARTBEAT, PREFILL, VERIFY, RELEASE})
TO_DRAFT = frozenset({HELLO, BYE, HEARTBEAT, PREFILL_DONE, VERIFY_RESULT, ERROR, DONE})

TOKEN_BYTES = 4
TOKEN_DTYPE = "<i4"
MAX_FRAME_BYTES = 64 << 20  # the largest frame a node accepts (a 16M-token prompt)
ZMQ_SHORT_FRAME = 2  # ZMTP frame header (flags + 1-byte length) for bodies up to 255 bytes
ZMQ_LONG_FRAME = 9  # flags + 8-byte length

_INT = int
_FLOAT = float
_STR = str
_BYTES = bytes

# type -> ((key, python type, required), ...). Floats accept ints too (msgpack keeps 0 as an int only if
# the sender packs an int; our encoders always pack floats).
FIELDS: dict[int, tuple[tuple[str, type, bool], ...]] = {
    HELLO: (("n", _STR, True), ("hb", _FLOAT, False), ("qd", _INT, False)),
    BYE: (("n", _STR, True),),
    HEARTBEAT: (("n", _STR, False), ("qd", _INT, False)),
    PREFILL: (("r", _INT, True), ("o", _INT, True), ("tk", _BYTES, True), ("pd", _INT, False)),
    PREFILL_DONE: (
        ("r", _INT, True),
        ("tok", _INT, True),
        ("qd", _INT, True),
        ("tr", _FLOAT, True),
        ("bs", _FLOAT, True),
        ("be", _FLOAT, True),
        ("bn", _INT, True),
    ),
    VERIFY: (("r", _INT, True), ("p", _INT, True), ("tk", _BYTES, True), ("k", _INT, False), ("pr", _BYTES, False)),
    VERIFY_RESULT: (
        ("r", _INT, True),
        ("a", _INT, True),
        ("tok", _INT, True),
        ("qd", _INT, True),
        ("tr", _FLOAT, True),
        ("bs", _FLOAT, True),
        ("be", _FLOAT, True),
        ("bn", _INT, True),
    ),
    RELEASE: (("r", _INT, True),),
    ERROR: (("r", _INT, True), ("c", _STR, True), ("m", _STR, False)),
    DONE: (
        ("r", _INT, True),
        ("tok", _INT, True),
        ("n", _INT, True),
        ("rd", _INT, True),
        ("dr", _INT, True),
        ("ac", _INT, True),
        ("qd", _INT, True),
        ("be", _FLOAT, True),
    ),
}
_ALLOWED = {t: frozenset(["v", "t", *(k for k, _, _ in f)]) for t, f in FIELDS.items()}
_REQUIRED = {t: tuple((k, ty) for k, ty, req in f if req) for t, f in FIELDS.items()}
_OPTIONAL = {t: tuple((k, ty) for k, ty, req in f if not req) for t, f in FIELDS.items()}
_INT64 = (-(1 << 63), (1 << 63) - 1)


class ProtocolError(Exception):
    """A frame that is not a valid message. `reason` is a short counter key (garbage, version, ...)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def decode(frame: bytes, accept: frozenset[int] | None = None) -> dict:
    """Validate and return one message (a dict with at least 'v' and 't'); ProtocolError otherwise."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"{len(frame)} bytes")
    try:
        msg = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_FRAME_BYTES,
            max_str_len=4096,
            max_array_len=0,
            max_map_len=32,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError("garbage", f"{type(e).__name__}") from None
    if type(msg) is not dict:
        raise ProtocolError("garbage", f"not a map ({type(msg).__name__})")
    v = msg.get("v")
    if v != VERSION or type(v) is not int:
        raise ProtocolError("version", f"protocol version {v!r}, expected {VERSION}")
    t = msg.get("t")
    if type(t) is not int or t not in FIELDS:
        raise ProtocolError("unknown_type", f"message type {t!r}")
    if accept is not None and t not in accept:
        raise ProtocolError("unexpected_type", NAMES[t])
    for key, ty in _REQUIRED[t]:
        val = msg.get(key)
        if type(val) is not ty:
            if ty is float and type(val) is int:
                msg[key] = float(val)
                continue
            raise ProtocolError("bad_field", f"{NAMES[t]}.{key} = {_short(val)}")
    for key, ty in _OPTIONAL[t]:
        val = msg.get(key)
        if val is not None and type(val) is not ty:
            if ty is float and type(val) is int:
                msg[key] = float(val)
                continue
            raise ProtocolError("bad_field", f"{NAMES[t]}.{key} = {_short(val)}")
    if len(msg) > len(_ALLOWED[t]) or not _ALLOWED[t].issuperset(msg):
        extra = sorted(set(msg) - _ALLOWED[t])
        raise ProtocolError("bad_field", f"{NAMES[t]}: unknown keys {extra}")
    tk = msg.get("tk")
    if tk is not None and len(tk) % TOKEN_BYTES:
        raise ProtocolError("bad_field", f"{NAMES[t]}.tk: {len(tk)} bytes is not a whole number of int32 tokens")
    r = msg.get("r")
    if r is not None and not (0 <= r <= _INT64[1]):
        raise ProtocolError("bad_field", f"{NAMES[t]}.r = {r}")
    if t == VERIFY:
        if msg["p"] < 0:
            raise ProtocolError("bad_field", f"VERIFY.p = {msg['p']}")
        k = msg.get("k") or 0
        pr = msg.get("pr")
        if k < 0 or (pr is not None and len(pr) != len(tk) // TOKEN_BYTES * k * 6):
            raise ProtocolError("bad_field", "VERIFY.pr: expected gamma * k (int32 id, float16 prob) entries")
    elif t == PREFILL:
        if msg["o"] < 1:
            raise ProtocolError("bad_field", f"PREFILL.o = {msg['o']}")
        pd = msg.get("pd") or 0
        if pd < 0 or pd >= msg["o"] or pd > len(msg["tk"]) // TOKEN_BYTES:
            raise ProtocolError("bad_field", f"PREFILL.pd = {pd}")
    elif t == VERIFY_RESULT:
        if msg["a"] < 0 or msg["bn"] < 1:
            raise ProtocolError("bad_field", "VERIFY_RESULT.a / bn out of range")
    elif t == DONE:
        if msg["n"] < 1 or msg["rd"] < 0 or msg["dr"] < 0 or not 0 <= msg["ac"] <= msg["dr"]:
            raise ProtocolError("bad_field", "DONE.n / rd / dr / ac out of range")
    return msg


def _short(v: object) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


class Encoder:
    """Builds message frames with one reusable msgpack Packer (not thread-safe: one per thread)."""

    __slots__ = ("_pack",)

    def __init__(self) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def hello(self, node: str, heartbeat_s: float | None = None, queue_depth: int | None = None) -> bytes:
        m = {"v": VERSION, "t": HELLO, "n": node}
        if heartbeat_s is not None:
            m["hb"] = float(heartbeat_s)
        if queue_depth is not None:
            m["qd"] = queue_depth
        return self._pack(m)

    def bye(self, node: str) -> bytes:
        return self._pack({"v": VERSION, "t": BYE, "n": node})

    def heartbeat(self, node: str | None = None, queue_depth: int | None = None) -> bytes:
        m = {"v": VERSION, "t": HEARTBEAT}
        if node is not None:
            m["n"] = node
        if queue_depth is not None:
            m["qd"] = queue_depth
        return self._pack(m)

    def prefill(self, rid: int, output_tokens: int, prompt: bytes, produced: int = 0) -> bytes:
        """`produced` > 0: a re-routed request (testbed/faults.py rule 2): `prompt` ends with its produced tokens."""
        if produced:
            return self._pack({"v": VERSION, "t": PREFILL, "r": rid, "o": output_tokens, "tk": prompt, "pd": produced})
        return self._pack({"v": VERSION, "t": PREFILL, "r": rid, "o": output_tokens, "tk": prompt})

    def prefill_done(
        self, rid: int, token: int, depth: int, t_recv: float, b_start: float, b_end: float, b_size: int
    ) -> bytes:
        return self._pack(
            {
                "v": VERSION,
                "t": PREFILL_DONE,
                "r": rid,
                "tok": token,
                "qd": depth,
                "tr": t_recv,
                "bs": b_start,
                "be": b_end,
                "bn": b_size,
            }
        )

    def verify(self, rid: int, position: int, tokens: bytes, topk: int = 0, probs: bytes | None = None) -> bytes:
        if probs is None:
            return self._pack({"v": VERSION, "t": VERIFY, "r": rid, "p": position, "tk": tokens})
        return self._pack({"v": VERSION, "t": VERIFY, "r": rid, "p": position, "tk": tokens, "k": topk, "pr": probs})

    def verify_result(
        self, rid: int, accepted: int, token: int, depth: int, t_recv: float, b_start: float, b_end: float, b_size: int
    ) -> bytes:
        return self._pack(
            {
                "v": VERSION,
                "t": VERIFY_RESULT,
                "r": rid,
                "a": accepted,
                "tok": token,
                "qd": depth,
                "tr": t_recv,
                "bs": b_start,
                "be": b_end,
                "bn": b_size,
            }
        )

    def done(
        self, rid: int, token: int, produced: int, rounds: int, drafted: int, accepted: int, depth: int, t_end: float
    ) -> bytes:
        return self._pack(
            {
                "v": VERSION,
                "t": DONE,
                "r": rid,
                "tok": token,
                "n": produced,
                "rd": rounds,
                "dr": drafted,
                "ac": accepted,
                "qd": depth,
                "be": t_end,
            }
        )

    def release(self, rid: int) -> bytes:
        return self._pack({"v": VERSION, "t": RELEASE, "r": rid})

    def error(self, rid: int, code: str, message: str = "") -> bytes:
        return self._pack({"v": VERSION, "t": ERROR, "r": rid, "c": code, "m": message})


def wire_size(frame: bytes) -> int:
    """Application bytes of a frame on the TCP stream: the body plus its ZMTP frame header.

    (The ROUTER's identity frame stays inside the sockets: it never crosses the wire.)
    """
    n = len(frame)
    return n + (ZMQ_SHORT_FRAME if n <= 255 else ZMQ_LONG_FRAME)
