"""Rank statistics of proxies against a ground truth, and fitted proxy combinations scored by CV.

``kendall_ci(x, y, seed=...)``: Kendall tau, Spearman rho and a seeded bootstrap 95% CI of tau
(resampling architectures) — the numbers of every row of a proxy-vs-ground-truth table.

``cv_fit(table, target, features, method=...)``: fits a combination of per-architecture proxy
values (params/FLOPs are features like any other) to the ground-truth top-1 and scores it ONLY by
K-fold cross-validation: every architecture's prediction comes from a model fitted on the other
folds, and tau / rho / CI are computed on those out-of-fold predictions. Two methods:

``rank_ensemble``  greedy forward selection of members (each with a sign) maximising the training
                   folds' Kendall tau of the mean of their normalised ranks; equal weights.
``ridge``          ridge regression of the target's normalised rank on the features' normalised
                   ranks (standardised), the penalty chosen by an inner K-fold inside the
                   training folds (nested CV).

Normalised ranks of held-out rows are their mid-rank empirical CDF in the TRAINING rows of that
feature, so a held-out row never influences the transform applied to it. The model refitted on
all rows (``CVFit.final``) is reported for reading (which members, which weights), never scored.

numpy + scipy only; no torch import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .checks import at_least

__all__ = ["kendall_ci", "cv_fit", "cv_fit_all", "CVFit", "METHODS", "DEFAULT_ALPHAS", "MIN_ROWS_PER_FOLD"]

#: ridge penalties tried by the inner cross-validation
DEFAULT_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
#: cv_fit needs at least this many complete rows per fold
MIN_ROWS_PER_FOLD = 2


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------
def _tau(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(x, y)[0])


def _as_float_array(v: Union[Sequence[float], np.ndarray], name: str) -> np.ndarray:
    try:
        a = np.asarray([float(t) for t in v], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a sequence of numbers: {e}") from None
    if not np.all(np.isfinite(a)):
        bad = [i for i, t in enumerate(a) if not math.isfinite(t)]
        raise ValueError(f"{name} has non-finite values at positions {bad[:10]}")
    return a


def kendall_ci(x: Union[Sequence[float], np.ndarray], y: Union[Sequence[float], np.ndarray], *, seed: int = 0,
               boot: int = 1000,
               level: float = 0.95) -> dict[str, Any]:
    """Kendall tau (tau-b), Spearman rho and a percentile bootstrap CI of tau.

    The bootstrap resamples architectures (pairs (x_i, y_i)) with replacement, ``boot`` times from
    ``numpy.random.default_rng(seed)``; resamples where x or y is constant are skipped.

    Returns ``{n, kendall_tau, spearman_rho, tau_ci95: [lo, hi], boot, level}``; tau/rho/CI are
    None when x or y is constant (the correlation is undefined).
    Raises ValueError for mismatched lengths, fewer than 3 pairs or non-finite values.
    """
    from scipy.stats import spearmanr

    if len(x) != len(y):
        raise ValueError(f"kendall_ci: x has {len(x)} values, y has {len(y)}")
    xa, ya = _as_float_array(x, "x"), _as_float_array(y, "y")
    n = len(xa)
    if n < 3:
        raise ValueError(f"kendall_ci needs at least 3 pairs, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    out: dict[str, Any] = dict(n=n, kendall_tau=None, spearman_rho=None, tau_ci95=None, boot=boot, level=level)
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out
    out["kendall_tau"] = _tau(xa, ya)
    out["spearman_rho"] = float(spearmanr(xa, ya)[0])
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(boot):
        idx = rng.integers(0, n, n)
        xs, ys = xa[idx], ya[idx]
        if np.ptp(xs) > 0 and np.ptp(ys) > 0:
            taus.append(_tau(xs, ys))
    if taus:
        a = 100 * (1 - level) / 2
        out["tau_ci95"] = [float(np.percentile(taus, a)), float(np.percentile(taus, 100 - a))]
    return out


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
def _ecdf(train_col: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of ``col`` in ``train_col``: in [0, 1], ties share the middle."""
    s = np.sort(train_col)
    left = np.searchsorted(s, col, side="left")
    right = np.searchsorted(s, col, side="right")
    return (left + right) / (2.0 * len(s))


def _ranks(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    return np.column_stack([_ecdf(train[:, j], test[:, j]) for j in range(train.shape[1])])


# ---------------------------------------------------------------------------------------------
# rank ensemble
# ---------------------------------------------------------------------------------------------
def _fit_rank_ensemble(x: np.ndarray, y: np.ndarray, max_members: int) -> dict[str, Any]:
    r = _ranks(x, x)
    chosen: list[int] = []
    signs: list[float] = []
    best = -math.inf
    while len(chosen) < max_members:
        cand: Optional[tuple[float, int, float]] = None
        for j in range(x.shape[1]):
            if j in chosen or np.ptp(r[:, j]) == 0:
                continue
            for s in (1.0, -1.0):
                score = (r[:, chosen] @ np.asarray(signs) if chosen else 0.0) + s * r[:, j]
                t = _tau(score, y) if np.ptp(score) > 0 else -math.inf
                if cand is None or t > cand[0]:
                    cand = (t, j, s)
        if cand is None or not cand[0] > best + 1e-12:
            break
        best = cand[0]
        chosen.append(cand[1])
        signs.append(cand[2])
    return dict(members=chosen, signs=signs, train_tau=best if chosen else None, train_x=x)


def _predict_rank_ensemble(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    if not model["members"]:
        return np.zeros(len(x))
    r = _ranks(model["train_x"], x)
    return r[:, model["members"]] @ np.asarray(model["signs"]) / len(model["members"])


# ---------------------------------------------------------------------------------------------
# ridge on ranks
# ---------------------------------------------------------------------------------------------
def _ridge_solve(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, Any]:
    r = _ranks(x, x)
    mu, sd = r.mean(axis=0), r.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (r - mu) / sd
    t = _ecdf(y, y)
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (t - t.mean()))
    return dict(alpha=alpha, weights=w, intercept=float(t.mean()), mu=mu, sd=sd, train_x=x)


def _predict_ridge(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = (_ranks(model["train_x"], x) - model["mu"]) / model["sd"]
    return z @ model["weights"] + model["intercept"]


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    perm = np.random.default_rng(seed).permutation(n)
    ids = np.empty(n, dtype=int)
    ids[perm] = np.arange(n) % folds
    return ids


def _fit_ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float], inner_folds: int, seed: int) -> dict[str, Any]:
    """Pick alpha by an inner K-fold on (x, y) alone, then fit on all of (x, y)."""
    k = max(2, min(inner_folds, len(x) // MIN_ROWS_PER_FOLD))
    ids = _fold_ids(len(x), k, seed)
    scores = []
    for a in alphas:
        pred = np.empty(len(x))
        for f in range(k):
            tr, te = ids != f, ids == f
            pred[te] = _predict_ridge(_ridge_solve(x[tr], y[tr], a), x[te])
        scores.append(_tau(pred, y) if np.ptp(pred) > 0 else -math.inf)
    best = max(range(len(alphas)), key=lambda i: (scores[i], alphas[i]))  # ties -> the larger penalty
    model = _ridge_solve(x, y, float(alphas[best]))
    model["inner_tau"] = {float(a): (None if not math.isfinite(s) else s) for a, s in zip(alphas, scores)}
    return model


# ---------------------------------------------------------------------------------------------
# cross-validated fit
# ---------------------------------------------------------------------------------------------
METHODS = ("rank_ensemble", "ridge")


@dataclass
class CVFit:
    """A fitted combination scored by K-fold CV (``kendall_*``/``spearman_rho`` are out-of-fold)."""

    method: str
    features: list[str]
    n: int
    folds: int
    seed: int
    dropped: list[int]  # input rows left out (a missing/non-finite feature or target)
    predictions: list[Optional[float]]  # out-of-fold prediction per input row (None if dropped)
    fold_of: list[Optional[int]]  # the fold each row was held out in
    kendall_tau: Optional[float]
    tau_ci95: Optional[list[float]]
    spearman_rho: Optional[float]
    fold_taus: list[Optional[float]]  # tau inside each held-out fold (a spread, not the headline)
    fold_models: list[dict[str, Any]] = field(default_factory=list)  # what each fold chose
    final: dict[str, Any] = field(default_factory=dict)  # refit on every row: for reading, NOT scored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> Optional[float]:
    v = getattr(v, "value", v)  # a ProxyResult
    if isinstance(v, Mapping):
        v = v.get("value")
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _matrix(table: Sequence[Mapping[str, Any]], target: Sequence[Any], features: Sequence[str]
            ) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    if len(table) != len(target):
        raise ValueError(f"cv_fit: the table has {len(table)} rows, the target {len(target)} values")
    if not features:
        raise ValueError("cv_fit needs at least one feature")
    if len(set(features)) != len(features):
        raise ValueError(f"cv_fit: features repeat: {list(features)}")
    present = set().union(*(r.keys() for r in table)) if table else set()
    unknown = [f for f in features if f not in present]
    if unknown:
        raise ValueError(f"cv_fit: features {unknown} are in no row of the table")
    keep, dropped, rows, ys = [], [], [], []
    for i, (r, t) in enumerate(zip(table, target)):
        vals = [_num(r.get(f)) for f in features]
        yt = _num(t)
        if yt is None or any(v is None for v in vals):
            dropped.append(i)
            continue
        keep.append(i)
        rows.append(vals)
        ys.append(yt)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(features)), np.asarray(ys), keep, dropped


def _public(model: dict[str, Any], method: str, features: Sequence[str]) -> dict[str, Any]:
    if method == "rank_ensemble":
        return dict(members=[features[j] for j in model["members"]], signs=model["signs"], train_tau=model["train_tau"])
    return dict(alpha=model["alpha"], weights=dict(zip(features, map(float, model["weights"]))),
                inner_tau=model["inner_tau"])


def cv_fit(table: Sequence[Mapping[str, Any]], target: Sequence[Any], features: Sequence[str], *,
           method: str = "ridge", folds: int = 5, seed: int = 0, boot: int = 1000,
           max_members: Optional[int] = None, alphas: Sequence[float] = DEFAULT_ALPHAS) -> CVFit:
    """Fit ``method`` on per-architecture ``features`` against ``target``; score it by K-fold CV.

    Args:
        table: one mapping per architecture, feature name -> number / ``ProxyResult`` /
            ``{"value": ...}`` (e.g. a ``compute_proxy_table`` record, with params/FLOPs).
        target: ground-truth top-1 per architecture (same order).
        features: the columns to use.
        method: ``rank_ensemble`` or ``ridge``.
        folds: K (rows are shuffled with ``seed`` and dealt into K folds).
        seed: fold assignment, inner CV and bootstrap seed.
        boot: bootstrap resamples for the CI of the out-of-fold tau.
        max_members: cap on the rank ensemble's members (default: all features).
        alphas: ridge penalties for the inner CV.

    Rows with a missing or non-finite feature or target are left out and listed in ``dropped``.
    Raises ValueError for mismatched lengths, unknown features/method, or fewer complete rows than
    ``MIN_ROWS_PER_FOLD * folds``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    at_least("folds", folds, 2)
    x, y, keep, dropped = _matrix(table, target, features)
    n = len(y)
    if n < MIN_ROWS_PER_FOLD * folds:
        raise ValueError(f"cv_fit needs at least {MIN_ROWS_PER_FOLD * folds} complete rows for {folds} folds, "
                         f"got {n} ({len(dropped)} of {len(table)} rows dropped for missing values)")
    if method == "ridge" and not alphas:
        raise ValueError("ridge needs at least one alpha")
    cap = len(features) if max_members is None else max_members
    if cap < 1:
        raise ValueError(f"max_members={max_members} must be >= 1")

    def fit(xt: np.ndarray, yt: np.ndarray, s: int) -> dict[str, Any]:
        return _fit_rank_ensemble(xt, yt, cap) if method == "rank_ensemble" else _fit_ridge(xt, yt, alphas, folds, s)

    def predict(model: dict[str, Any], xt: np.ndarray) -> np.ndarray:
        return _predict_rank_ensemble(model, xt) if method == "rank_ensemble" else _predict_ridge(model, xt)

    ids = _fold_ids(n, folds, seed)
    pred = np.empty(n)
    fold_models, fold_taus = [], []
    for f in range(folds):
        tr, te = ids != f, ids == f
        model = fit(x[tr], y[tr], seed + 1 + f)
        pred[te] = predict(model, x[te])
        fold_models.append(_public(model, method, features))
        fold_taus.append(_tau(pred[te], y[te]) if te.sum() >= 2 and np.ptp(pred[te]) > 0 and np.ptp(y[te]) > 0
                         else None)
    stats = kendall_ci(pred, y, seed=seed, boot=boot)
    predictions: list[Optional[float]] = [None] * len(table)
    fold_of: list[Optional[int]] = [None] * len(table)
    for k, i in enumerate(keep):
        predictions[i] = float(pred[k])
        fold_of[i] = int(ids[k])
    return CVFit(method=method, features=list(features), n=n, folds=folds, seed=seed, dropped=dropped,
                 predictions=predictions, fold_of=fold_of, kendall_tau=stats["kendall_tau"],
                 tau_ci95=stats["tau_ci95"], spearman_rho=stats["spearman_rho"], fold_taus=fold_taus,
                 fold_models=fold_models, final=_public(fit(x, y, seed), method, features))


def cv_fit_all(table: Sequence[Mapping[str, Any]], target: Sequence[Any], features: Sequence[str], **kw: Any
               ) -> dict[str, CVFit]:
    """``cv_fit`` with every method (same folds, same seed): ``{method: CVFit}``."""
    return {m: cv_fit(table, target, features, method=m, **kw) for m in METHODS}
