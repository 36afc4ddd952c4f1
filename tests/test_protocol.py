"""The node protocol: every message round-trips, every malformed frame is rejected with a reason, and the
real encoded sizes agree with the simulator's size model (testbed/wire.py) within 16 bytes."""

from __future__ import annotations

import msgpack
import pytest

from nodes import check_endpoint
from nodes import protocol as P
from nodes.backends import synthetic_tokens, tokens_array
from testbed import wire

E = P.Encoder()
T = 1234.567891234  # a realistic timestamp (float64 on the wire)


def all_messages() -> list[bytes]:
    tk = synthetic_tokens(5, 0, 4)
    return [
        E.hello("edge0", 0.5),
        E.hello("cloud0", None, 3),
        E.bye("edge0"),
        E.heartbeat("edge0"),
        E.heartbeat("cloud0", 7),
        E.prefill(5, 100, synthetic_tokens(5, 0, 300)),
        E.prefill_done(5, 123, 2, T, T, T, 8),
        E.verify(5, 17, tk),
        E.verify(5, 17, tk, 2, bytes(4 * 2 * 6)),
        E.verify(5, 17, b""),
        E.verify_result(5, 3, 99, 0, T, T, T, 1),
        E.release(5),
        E.error(5, "unknown_request", "x"),
        E.done(5, 1, 10, 3, 8, 6, 0, T),
    ]


def test_every_message_round_trips():
    for data in all_messages():
        m = P.decode(data)
        assert m["v"] == P.VERSION and m["t"] in P.NAMES
        assert msgpack.packb(m, use_bin_type=True) == data  # nothing added, nothing lost


def test_direction_filter():
    P.decode(E.verify(1, 1, b""), P.TO_TARGET)
    with pytest.raises(P.ProtocolError) as e:
        P.decode(E.verify(1, 1, b""), P.TO_DRAFT)
    assert e.value.reason == "unexpected_type"


def test_tokens_are_packed_int32():
    tk = synthetic_tokens(9, 3, 6)
    m = P.decode(E.verify(9, 3, tk))
    assert len(m["tk"]) == 24 and tokens_array(m["tk"]).dtype.str == "<i4"
    assert list(tokens_array(m["tk"])) == list(tokens_array(tk))


def _pk(d) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


@pytest.mark.parametrize(
    "frame,reason",
    [
        (b"", "garbage"),
        (b"\xc1\xc1\xc1", "garbage"),
        (b"\x00" * 100, "garbage"),
        (_pk([1, 2, 3]), "garbage"),
        (_pk({"v": 1, "t": P.RELEASE, "r": 1}) + b"x", "garbage"),
        (_pk({"v": 2, "t": P.RELEASE, "r": 1}), "version"),
        (_pk({"v": True, "t": P.RELEASE, "r": 1}), "version"),
        (_pk({"t": P.RELEASE, "r": 1}), "version"),
        (_pk({"v": 1, "t": 99, "r": 1}), "unknown_type"),
        (_pk({"v": 1, "t": "VERIFY", "r": 1}), "unknown_type"),
        (_pk({"v": 1, "t": P.RELEASE}), "bad_field"),
        (_pk({"v": 1, "t": P.RELEASE, "r": "1"}), "bad_field"),
        (_pk({"v": 1, "t": P.RELEASE, "r": -1}), "bad_field"),
        (_pk({"v": 1, "t": P.RELEASE, "r": 1, "zz": 0}), "bad_field"),
        (_pk({"v": 1, "t": P.VERIFY, "r": 1, "p": 1, "tk": b"abc"}), "bad_field"),
        (_pk({"v": 1, "t": P.VERIFY, "r": 1, "p": 1, "tk": [1, 2]}), "garbage"),  # arrays are not accepted at all
        (_pk({"v": 1, "t": P.VERIFY, "r": 1, "p": -1, "tk": b""}), "bad_field"),
        (_pk({"v": 1, "t": P.VERIFY, "r": 1, "p": 1, "tk": b"\0" * 8, "k": 2, "pr": b"\0" * 5}), "bad_field"),
        (_pk({"v": 1, "t": P.PREFILL, "r": 1, "o": 0, "tk": b""}), "bad_field"),
        (
            _pk({"v": 1, "t": P.VERIFY_RESULT, "r": 1, "a": -1, "tok": 1, "qd": 0, "tr": T, "bs": T, "be": T, "bn": 1}),
            "bad_field",
        ),
        (_pk({"v": 1, "t": P.HELLO, "n": 5}), "bad_field"),
    ],
)
def test_malformed_frames_are_rejected(frame, reason):
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frame)
    assert e.value.reason == reason


def test_random_garbage_never_escapes_as_other_exceptions():
    import random

    rng = random.Random(3)
    good = all_messages()
    for i in range(3000):
        base = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        try:
            P.decode(bytes(base))
        except P.ProtocolError:
            pass


def test_sizes_match_the_simulator_wire_model():
    rid, t = 2_000_000_000, T
    for n in (0, 1, 4, 8, 16, 63, 64, 128, 512, 2048, 8192):
        tk = synthetic_tokens(rid, 0, n)
        real = {
            "PREFILL": P.wire_size(E.prefill(rid, 4096, tk)),
            "VERIFY": P.wire_size(E.verify(rid, 4000, tk)),
        }
        for kind, size in real.items():
            model = wire.payload_bytes(kind, n)
            assert abs(size - model) <= 16, f"{kind} with {n} tokens: {size} bytes encoded, wire.py says {model}"
    fixed = {
        "PREFILL_DONE": P.wire_size(E.prefill_done(rid, 31999, 12, t, t, t, 32)),
        "VERIFY_RESULT": P.wire_size(E.verify_result(rid, 4, 31999, 12, t, t, t, 32)),
        "RELEASE": P.wire_size(E.release(rid)),
        "DONE": P.wire_size(E.done(rid, 31999, 2048, 700, 2800, 1300, 12, t)),
        "HEARTBEAT": P.wire_size(E.heartbeat("edge0")),
    }
    assert abs(P.wire_size(E.heartbeat("cloud0", 12)) - wire.payload_bytes("HEARTBEAT")) <= 16
    for kind, size in fixed.items():
        model = wire.payload_bytes(kind, 0)
        assert abs(size - model) <= 16, f"{kind}: {size} bytes encoded, wire.py says {model}"


def test_bind_address_must_be_concrete():
    assert check_endpoint("tcp://127.0.0.1:0") == "tcp://127.0.0.1:0"
    for bad in ("tcp://0.0.0.0:5555", "tcp://*:5555", "ipc:///tmp/x"):
        with pytest.raises(SystemExit):
            check_endpoint(bad)
