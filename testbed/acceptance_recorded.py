"""Acceptance sequences recorded from real models, replayed by the simulator and the profiled backend.

File format (`.npz`, numpy only; written by testbed.calibrate.record):

    request_id  int64 [N]      the request ids (trace order of the recorded workload)
    offsets     int64 [N + 1]  request i's booleans are accepted[offsets[i]:offsets[i+1]]
    accepted    bool  [total]  per output position j = 0 .. len-1: did the draft's greedy token equal the
                               target's greedy token, given the target's own prefix (position 0, the
                               prefill's token, is stored True and never used)
    meta        0-d str        JSON: draft, target, prompt source, trace, clipping, when

Replay (`RecordedAcceptance.sequence(seed, request_id, n)`): the request's own sequence when its id was
recorded, else the sequence of recorded request (request_id mod N); positions past the recorded length are
drawn iid at the recording's overall acceptance rate with the counter-based generator of
testbed.acceptance (so every process computes the same values). Greedy acceptance is a property of the
position (DESIGN.md), which is what makes replay exact: a round at position k with window gamma accepts
the run of True from k, as it did with the real models.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from testbed.acceptance import uniforms
from testbed.errors import InputError


class RecordedAcceptance:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                self.request_id = z["request_id"].astype(np.int64)
                self.offsets = z["offsets"].astype(np.int64)
                self.accepted = z["accepted"].astype(bool)
                self.meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        except (OSError, KeyError, ValueError) as e:
            raise InputError(str(path), f"cannot read recorded acceptance sequences: {e}") from None
        n = len(self.request_id)
        if (
            n == 0
            or len(self.offsets) != n + 1
            or self.offsets[-1] != len(self.accepted)
            or np.any(np.diff(self.offsets) < 0)
        ):
            raise InputError(str(path), "recorded acceptance file is inconsistent (request_id / offsets / accepted)")
        self.index = {int(r): i for i, r in enumerate(self.request_id)}
        lens = np.diff(self.offsets)
        body = np.concatenate(
            [self.accepted[o + 1 : o + l] for o, l in zip(self.offsets[:-1], lens) if l > 1] or [np.zeros(0, bool)]
        )
        self.rate = float(body.mean()) if len(body) else 0.0

    def __len__(self) -> int:
        return len(self.request_id)

    def recorded(self, request_id: int) -> np.ndarray:
        i = self.index.get(int(request_id))
        if i is None:
            i = int(request_id) % len(self.request_id)
        return self.accepted[self.offsets[i] : self.offsets[i + 1]]

    def sequence(self, seed: int, request_id: int, n: int) -> np.ndarray:
        rec = self.recorded(request_id)
        if len(rec) >= n:
            return rec[:n].copy()
        out = uniforms(seed, request_id, n) < self.rate
        out[: len(rec)] = rec
        return out


@lru_cache(maxsize=8)
def load_recorded(path: str) -> RecordedAcceptance:
    return RecordedAcceptance(path)


def save_recorded(path: str | Path, sequences: dict[int, np.ndarray], meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rids = np.array(sorted(sequences), dtype=np.int64)
    lens = np.array([len(sequences[r]) for r in rids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    acc = np.concatenate([np.asarray(sequences[r], dtype=bool) for r in rids]) if len(rids) else np.zeros(0, bool)
    with open(path, "wb") as f:
        np.savez_compressed(f, request_id=rids, offsets=offsets, accepted=acc, meta=np.array(json.dumps(meta)))
    return path


def sequences_from_rounds(rounds, requests, fallback) -> tuple[dict[int, np.ndarray], dict]:
    """The acceptance a run showed, per request, as replayable booleans ("as built", like measured links).

    rounds: a rounds table (testbed.tables: request_id, produced, gamma, accepted); requests: a requests
    table (request_id, output_tokens); fallback(request_id, n) -> booleans for the positions the run never
    tested. A round at `produced` p with window g that accepted a shows positions p .. p+a-1 accepted and,
    when a < g, position p+a rejected; the prefill's position 0 is True; bonus positions (a = g) and
    positions no round reached take the fallback's value. Replaying these with the same windows reproduces
    the run's accepted counts exactly (greedy acceptance is a property of the position)."""
    seqs: dict[int, np.ndarray] = {}
    n_tested = n_filled = 0
    out_len = dict(zip(requests["request_id"].astype(int), requests["output_tokens"].astype(int)))
    tested: dict[int, np.ndarray] = {}
    for rid, n in out_len.items():
        seqs[rid] = np.asarray(fallback(rid, n), dtype=bool).copy()
        tested[rid] = np.zeros(n, dtype=bool)
    rid_a = rounds["request_id"].to_numpy(np.int64)
    p_a = rounds["produced"].to_numpy(np.int64)
    g_a = rounds["gamma"].to_numpy(np.int64)
    a_a = rounds["accepted"].to_numpy(np.int64)
    for rid, p, g, a in zip(rid_a.tolist(), p_a.tolist(), g_a.tolist(), a_a.tolist()):
        s = seqs.get(rid)
        if s is None:
            continue
        n = len(s)
        hi = min(p + a, n)
        s[p:hi] = True
        tested[rid][p:hi] = True
        if a < g and p + a < n:
            s[p + a] = False
            tested[rid][p + a] = True
    for rid, s in seqs.items():
        if len(s):
            s[0] = True
        n_tested += int(tested[rid].sum())
        n_filled += max(0, len(s) - 1 - int(tested[rid][1:].sum()))
    return seqs, {"positions_tested": n_tested, "positions_filled": n_filled}
