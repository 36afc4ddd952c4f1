"""Train the WC-DNN (torch) on rollout labels and export it to the numpy policy (testbed.policies.awc).

Model: features (testbed.policies.features, standardised with the training set's mean / std) -> Linear(16)
-> ReLU -> Linear(16) -> ReLU -> Linear(len(candidates)); cross-entropy on the oracle label (label
smoothing 0.05), Adam (lr 3e-3, weight decay 1e-3), 400 full-batch epochs. (32x32 and 64x64 layers, soft
targets from the rollout scores and shorter training were tried: the small, regularised net generalised
best to held-out families — the labels are noisy, capacity overfits them.) Reproducible from `seed` (torch and numpy
seeded, deterministic
algorithms, one thread).

Evaluation is held out **by scenario family** (leave-one-family-out): for each topology family, a model is
trained on the other families and scored on that one against the oracle: exact-match accuracy,
within-one-candidate accuracy, and regrets from the stored rollout scores of every candidate:
    goodput regret = (max_G goodput_R(G) - goodput_R(pred)) / max_G goodput_R(G)
    rate regret    = (rate_R(label) - rate_R(pred)) / rate_R(label)
with the same numbers for static gamma = 4 and for the analytic `g_model` feature as references.
The shipped model is then trained on all families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from testbed.policies.awc import AWCNet
from testbed.policies.features import FEATURE_NAMES

HIDDEN = (16, 16)


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 400
    lr: float = 3e-3
    weight_decay: float = 1e-3
    hidden: tuple[int, ...] = HIDDEN
    label_smoothing: float = 0.05
    soft_tau: float = 0.0  # > 0: soft targets from the rollout scores instead of the hard label (see soft_targets)


def soft_targets(df: pd.DataFrame, tau: float) -> np.ndarray:
    """Per row, a distribution over candidates: exp((rate_G / rate_label - 1) / tau) over the candidates whose
    goodput is at least the label's, 0 elsewhere: near-optimal windows share the probability mass."""
    cands = candidates_of(df)
    good = df[[f"good_{g}" for g in cands]].to_numpy()
    rate = df[[f"rate_{g}" for g in cands]].to_numpy()
    lab = df["label_idx"].to_numpy()
    rows = np.arange(len(df))
    ref = np.maximum(rate[rows, lab], 1e-9)[:, None]
    feasible = good >= good[rows, lab][:, None] - 1e-9
    z = np.where(feasible, (rate / ref - 1.0) / tau, -np.inf)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def candidates_of(df: pd.DataFrame) -> tuple[int, ...]:
    return tuple(sorted(int(c[5:]) for c in df.columns if c.startswith("good_")))


def features_of(df: pd.DataFrame) -> np.ndarray:
    return df[[f"f_{n}" for n in FEATURE_NAMES]].to_numpy(dtype=np.float64)


def fit(df: pd.DataFrame, cfg: TrainConfig) -> AWCNet:
    import torch

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    cands = candidates_of(df)
    x = features_of(df)
    mu = x.mean(axis=0)
    sigma = x.std(axis=0)
    sigma[sigma < 1e-6] = 1.0
    xt = torch.tensor((x - mu) / sigma, dtype=torch.float32)
    if cfg.soft_tau > 0:
        yt = torch.tensor(soft_targets(df, cfg.soft_tau), dtype=torch.float32)
    else:
        yt = torch.tensor(df["label_idx"].to_numpy(), dtype=torch.long)
    dims = (x.shape[1], *cfg.hidden, len(cands))
    mods: list[Any] = []
    for i in range(len(dims) - 1):
        mods.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for _ in range(cfg.epochs):
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
    layers = tuple(
        (m.weight.detach().numpy().astype(np.float64), m.bias.detach().numpy().astype(np.float64))
        for m in net
        if isinstance(m, torch.nn.Linear)
    )
    return AWCNet(mu, sigma, layers, cands)


def predict(net: AWCNet, df: pd.DataFrame) -> np.ndarray:
    """Index into the candidates of each row's decision (batched forward of the same network)."""
    h = (features_of(df) - net.mu) / net.sigma
    for i, (w, b) in enumerate(net.layers):
        h = h @ w.T + b
        if i < len(net.layers) - 1:
            h = np.maximum(h, 0.0)
    return h.argmax(axis=1)


def _nearest(cands: tuple[int, ...], g: np.ndarray) -> np.ndarray:
    c = np.asarray(cands)
    return np.abs(g[:, None] - c[None, :]).argmin(axis=1)


def score(df: pd.DataFrame, pred_idx: np.ndarray) -> dict[str, float]:
    """Accuracy and regrets of decisions `pred_idx` (candidate indices) against the oracle labels."""
    cands = candidates_of(df)
    good = df[[f"good_{g}" for g in cands]].to_numpy()
    rate = df[[f"rate_{g}" for g in cands]].to_numpy()
    lab = df["label_idx"].to_numpy()
    rows = np.arange(len(df))
    gmax = good.max(axis=1)
    g_reg = np.where(gmax > 0, (gmax - good[rows, pred_idx]) / np.where(gmax > 0, gmax, 1.0), 0.0)
    r_lab = rate[rows, lab]
    r_reg = np.where(r_lab > 0, (r_lab - rate[rows, pred_idx]) / np.where(r_lab > 0, r_lab, 1.0), 0.0)
    return {
        "n": int(len(df)),
        "exact": float((pred_idx == lab).mean()),
        "within1": float((np.abs(pred_idx - lab) <= 1).mean()),
        "goodput_regret": float(g_reg.mean()),
        "rate_regret": float(r_reg.mean()),
    }


def evaluate_heldout(df: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Leave-one-family-out: per family, AWC (trained on the others), static:4 and g_model vs the oracle."""
    cands = candidates_of(df)
    out = []
    for fam in sorted(df["family"].unique()):
        test = df[df["family"] == fam]
        train = df[df["family"] != fam]
        if len(train) == 0 or len(test) == 0:
            continue
        net = fit(train, cfg)
        refs = {
            "awc": predict(net, test),
            "static:4": np.full(len(test), cands.index(4) if 4 in cands else 0),
            "g_model": _nearest(cands, test["f_g_model"].to_numpy()),
        }
        for name, p in refs.items():
            out.append({"family": fam, "policy": name, **score(test, p)})
    return pd.DataFrame(out)


def train_all(df: pd.DataFrame, cfg: TrainConfig) -> tuple[AWCNet, pd.DataFrame, dict[str, Any]]:
    """Held-out report, then the model trained on every family (with its training-set fit and metadata)."""
    held = evaluate_heldout(df, cfg)
    net = fit(df, cfg)
    fit_scores = score(df, predict(net, df))
    awc = held[held["policy"] == "awc"]
    w = awc["n"] / awc["n"].sum() if len(awc) else awc["n"]
    meta = {
        "samples": int(len(df)),
        "configs": int(df["config"].nunique()),
        "branches": int(df.groupby(["config", "branch"]).ngroups),
        "families": ",".join(sorted(df["family"].unique())),
        "seed": cfg.seed,
        "hidden": ",".join(map(str, cfg.hidden)),
        "heldout_exact": float((awc["exact"] * w).sum()) if len(awc) else float("nan"),
        "heldout_goodput_regret": float((awc["goodput_regret"] * w).sum()) if len(awc) else float("nan"),
        "heldout_rate_regret": float((awc["rate_regret"] * w).sum()) if len(awc) else float("nan"),
        "train_exact": fit_scores["exact"],
    }
    net = AWCNet(net.mu, net.sigma, net.layers, net.candidates, meta)
    return net, held, meta
