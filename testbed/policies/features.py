"""The one feature extractor of Adaptive Window Control (AWC), fed only from `RoundFeedback`.

Simulated drafts and draft nodes both call a window controller's `observe(fb)` after each round and
`next_gamma()` before the next one, so features built here from the feedback stream are identical in the
simulator and in emulation: there is no other input (no clock, no global state).

Per request (one `FeatureState` per controller) it keeps:

    alpha      per-token acceptance estimate: exponentially decayed pseudo-counts of accepted tokens and of
               rejections (a round with accepted < gamma), alpha = acc / (acc + rej), the censored-geometric
               estimate (testbed.policies.window.DecayedAcceptance: prior 0.7 with weight 2 tokens; decay
               0.8 per round)
    rtt        EWMA (weight 0.3) of the round RTT, VERIFY sent -> VERIFY_RESULT received (ms)
    trend      EWMA (weight 0.3) of the round-to-round RTT change, relative to the RTT EWMA
    qdepth     the target's queue depth reported with the last result, and its EWMA
    t_draft    EWMA of the draft time per drafted token (ms)
    verify     EWMA of the target's verify-batch time (ms)
    context    prompt + produced tokens before the next round
    last gamma the window of the last observed round
    rounds     rounds observed so far

`vector()` turns them into the model's input (FEATURE_NAMES, in this order; times in log-ms so that the
same network covers 1 ms LAN and 200 ms WAN paths), including `g_model`: the window maximising expected
tokens per second under the textbook model E[tokens](g) = (1 - a^(g+1)) / (1 - a) per round of length
g * t_draft + rtt + (g + 1) * verify_per_token. Before any feedback, times take the priors below and the
`have_obs` flag is 0.
"""

from __future__ import annotations

import math

from testbed.acceptance import expected_tokens_per_round
from testbed.policies.window import DecayedAcceptance, RoundFeedback

FEATURE_NAMES: tuple[str, ...] = (
    "alpha",  # acceptance estimate, 0..1
    "log_rtt_ms",  # log(1 + rtt EWMA in ms)
    "rtt_trend",  # relative RTT trend, clipped to [-1, 1]
    "log_qdepth",  # log(1 + last reported queue depth)
    "log_qdepth_ewma",  # log(1 + EWMA of queue depth)
    "log_tdraft_ms",  # log(draft ms per token)
    "log_verify_ms",  # log(1 + verify batch ms)
    "log_context",  # log(1 + context tokens)
    "last_gamma",  # window of the last round (0 before the first)
    "log_rounds",  # log(1 + rounds observed)
    "have_obs",  # 1 once a round with gamma > 0 was observed
    "log_rtt_over_td",  # log((1 + rtt ms) / draft ms per token): how many draft tokens one RTT is worth
    "g_model",  # model-optimal window (see module doc), 1..gamma_max
)
N_FEATURES = len(FEATURE_NAMES)

EWMA = 0.3
PRIOR_RTT_MS = 40.0
PRIOR_TDRAFT_MS = 12.0
PRIOR_VERIFY_MS = 15.0


def model_gamma(alpha: float, t_draft_ms: float, rtt_ms: float, verify_ms: float, gamma_max: int) -> int:
    """argmax over g in 1..gamma_max of E[tokens](g) / (g * t_draft + rtt + small per-token verify cost)."""
    a = min(max(alpha, 0.0), 0.999)
    per_tok = 0.005 * verify_ms  # verify cost grows slowly with the tokens of the window
    best_g, best = 1, -1.0
    for g in range(1, gamma_max + 1):
        rate = expected_tokens_per_round(a, g) / (g * t_draft_ms + rtt_ms + (g + 1) * per_tok + 1e-9)
        if rate > best:
            best, best_g = rate, g
    return best_g


class FeatureState:
    """Running per-request state; `update(fb)` after each round, `vector()` before each decision."""

    __slots__ = (
        "gamma_max",
        "context",
        "acceptance",
        "rtt",
        "prev_rtt",
        "trend",
        "qdepth",
        "qdepth_ewma",
        "t_draft",
        "verify",
        "last_gamma",
        "rounds",
        "have_obs",
    )

    def __init__(self, context_tokens: int, gamma_max: int):
        self.gamma_max = gamma_max
        self.context = context_tokens + 1  # the prefill's token exists before the first round
        self.acceptance = DecayedAcceptance()
        self.rtt = PRIOR_RTT_MS
        self.prev_rtt = -1.0
        self.trend = 0.0
        self.qdepth = 0
        self.qdepth_ewma = 0.0
        self.t_draft = PRIOR_TDRAFT_MS
        self.verify = PRIOR_VERIFY_MS
        self.last_gamma = 0
        self.rounds = 0
        self.have_obs = False

    @property
    def alpha(self) -> float:
        return self.acceptance.alpha

    def update(self, fb: RoundFeedback) -> None:
        self.rounds += 1
        self.context += fb.accepted + 1
        self.qdepth = fb.queue_depth
        rtt = fb.rtt_s * 1e3
        ver = fb.verify_s * 1e3
        if not self.have_obs:  # first observation replaces the priors of times
            self.qdepth_ewma = float(fb.queue_depth)
            self.rtt = rtt
            self.verify = ver
        else:
            self.qdepth_ewma += EWMA * (fb.queue_depth - self.qdepth_ewma)
            self.trend += EWMA * ((rtt - self.prev_rtt) / max(self.rtt, 1e-3) - self.trend)
            self.rtt += EWMA * (rtt - self.rtt)
            self.verify += EWMA * (ver - self.verify)
        self.prev_rtt = rtt
        if fb.gamma <= 0:  # a truncated final round says nothing about the draft
            return
        td = fb.draft_s * 1e3 / fb.gamma
        self.t_draft = td if not self.have_obs else self.t_draft + EWMA * (td - self.t_draft)
        self.have_obs = True
        self.last_gamma = fb.gamma
        self.acceptance.update(fb.gamma, fb.accepted)

    def vector(self) -> list[float]:
        a = self.alpha
        td = max(self.t_draft, 1e-3)
        trend = self.trend
        trend = -1.0 if trend < -1.0 else (1.0 if trend > 1.0 else trend)
        log = math.log
        return [
            a,
            log(1.0 + self.rtt),
            trend,
            log(1.0 + self.qdepth),
            log(1.0 + self.qdepth_ewma),
            log(td),
            log(1.0 + self.verify),
            log(1.0 + self.context),
            float(self.last_gamma),
            log(1.0 + self.rounds),
            1.0 if self.have_obs else 0.0,
            log((1.0 + self.rtt) / td),
            float(model_gamma(a, td, self.rtt, self.verify, self.gamma_max)),
        ]
