"""Few-shot transfer of a throughput predictor to another GPU: profile N configs there, correct the base.

Profiling 1,000 configs on every card is what a user will not do. A predictor of one card already
knows how the configs of a space rank and scale; another card mostly differs by a factor and by how
compute- or memory-bound work slows (an H100 has the H200's compute and 70 % of its memory
bandwidth). So ``adapt`` keeps the base predictor whole and fits, on the log residual of N
measurements of the new card, a correction with few coefficients:

- ``scale``: one factor (log offset): what 3 samples can pin down and what generalises from 5;
- ``roofline``: the factor and slopes in log MACs and log activation bytes (the card's compute and
  memory speed relative to the base's), from 8 samples;
- ``linear``: the factor and slopes in all six log scaling quantities of the base's ridge
  (``LINEAR_FEATURES``), from 30 samples.

``auto`` takes the richest one the sample count allows. Slopes are ridge-shrunk towards 0 (the
base's own trend), the factor is free. Since the correction is linear in quantities the base's
ridge already uses, it folds into that ridge exactly: the adapted predictor is an ordinary
predictor file (``predicted:NAME`` in a search) whose ``meta["adapted"]`` names the base, its
card, this card, N, the date, the correction and its leave-one-out error.

Which N configs: ``design`` spreads them over the base predictor's range (k-means in the
standardised space of log predicted images/s, resolution, log MACs and log activation bytes; the
pool config nearest each centre), so 5 samples see slow and fast, small and large resolutions,
compute- and memory-bound configs rather than what a random draw happens to give. HELP (Lee et al.,
NeurIPS 2021) adapts a meta-learned predictor from ~10 measurements of fixed reference
architectures; here the prior is a physical model of one card, so a low-dimensional correction
suffices, and the measured configs are chosen per base rather than fixed.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from search_spaces import FasterViTConfig

from .predictor import Predictor, PredictorError, _features, relative_errors
from .predictor_features import FEATURE_NAMES, LINEAR_FEATURES

__all__ = ["Correction", "CORRECTIONS", "choose_correction", "design", "adapt", "adapt_on_gpu",
           "default_name", "MIN_SAMPLES", "DESIGN_FEATURES", "RIDGE_ALPHA"]

#: ridge penalty on the standardised slopes of a correction (the factor is not penalised). Log MACs
#: and log bytes move together over a space, so the compute-vs-memory direction, the one a card
#: changes, has little spread: 1.0 shrank it to a third on a synthetic card (the H200 records with
#: memory-bound configs slowed), 0.1 keeps it (tests/evaluators/test_predictor_transfer.py); on the
#: H100 the two differ by under 1 point
RIDGE_ALPHA = 0.1
#: the fewest samples ``adapt`` takes (leave-one-out needs two, one more to say anything)
MIN_SAMPLES = 3
#: the space ``design`` spreads the samples over (besides the base's log predicted images/s)
DESIGN_FEATURES = ("resolution", "log_macs", "log_act_elems")
#: record keys that must agree between the base predictor and the new card's records
PROTOCOL_KEYS = ("mode", "dtype", "batch_size")
#: rounds of ``adapt_on_gpu`` replacing configs the card failed to run
MAX_ROUNDS = 3


@dataclass(frozen=True)
class Correction:
    """A correction of a base predictor's log prediction: a factor and slopes in ``features``."""

    name: str
    features: tuple[str, ...]
    min_samples: int
    description: str

    def __post_init__(self) -> None:
        bad = [f for f in self.features if f not in LINEAR_FEATURES]
        if bad:
            raise ValueError(f"correction {self.name!r}: features {bad} are not among the base's ridge "
                             f"quantities {list(LINEAR_FEATURES)} (only those fold into the predictor file)")
        if self.min_samples < max(MIN_SAMPLES, 2 + len(self.features)):
            raise ValueError(f"correction {self.name!r}: min_samples={self.min_samples} leaves leave-one-out "
                             f"fewer samples than its {1 + len(self.features)} coefficients")

    @property
    def n_coef(self) -> int:
        return 1 + len(self.features)


CORRECTIONS: dict[str, Correction] = {}


def register_correction(c: Correction) -> Correction:
    if c.name in CORRECTIONS or c.name == "auto":
        raise ValueError(f"correction {c.name!r} is already registered")
    CORRECTIONS[c.name] = c
    return c


register_correction(Correction("scale", (), MIN_SAMPLES, "one factor (a log offset) for the new card"))
register_correction(Correction("roofline", ("log_macs", "log_act_elems"), 8,
                               "a factor and slopes in log MACs and log activation bytes (compute vs memory speed)"))
register_correction(Correction("linear", LINEAR_FEATURES, 30,
                               "a factor and slopes in the six log scaling quantities of the base's ridge"))


def choose_correction(n_samples: int, name: str = "auto") -> Correction:
    """The correction ``name`` (``auto``: the richest one ``n_samples`` allows); errors say what N it needs."""
    if name != "auto" and name not in CORRECTIONS:
        raise PredictorError(f"unknown correction {name!r}; choose auto or one of {', '.join(CORRECTIONS)}")
    if n_samples < MIN_SAMPLES:
        raise PredictorError(f"{n_samples} sample(s) are too few to adapt a predictor: at least {MIN_SAMPLES} "
                             f"(leave-one-out needs them); 5-10 are a good start")
    if name == "auto":
        fits = [c for c in CORRECTIONS.values() if c.min_samples <= n_samples]
        return max(fits, key=lambda c: (c.min_samples, c.n_coef))
    c = CORRECTIONS[name]
    if n_samples < c.min_samples:
        allowed = [k for k, v in CORRECTIONS.items() if v.min_samples <= n_samples]
        raise PredictorError(f"correction {name!r} has {c.n_coef} coefficients and needs at least {c.min_samples} "
                             f"samples, not {n_samples}: profile --samples {c.min_samples} or more, or choose "
                             f"--correction {' / '.join(allowed + ['auto'])}")
    return c


# ------------------------------------------------------------------------------------------ design
def design(base: Predictor, configs: Sequence[Union[FasterViTConfig, Mapping[str, Any]]], n: int, *,
           seed: int = 0, iterations: int = 50) -> list[int]:
    """Indices of ``n`` of ``configs`` spread over the base predictor's range.

    k-means (k-means++ start, seeded) in the standardised space of the base's log predicted
    images/s and ``DESIGN_FEATURES``; each centre takes the nearest config not taken yet. Centres
    follow where configs are, so the picks cover slow and fast, small and large, compute- and
    memory-bound configs in proportion, without the corners a max-min design would favour.
    """
    if n < 1:
        raise PredictorError(f"cannot choose {n} configs")
    if n > len(configs):
        raise PredictorError(f"cannot choose {n} configs out of a pool of {len(configs)}")
    Z = design_space(base, configs)
    if n == len(configs):
        return list(range(n))
    rng = np.random.default_rng(seed)
    centres = _kmeans_pp(Z, n, rng)
    for _ in range(iterations):
        label = np.argmin(((Z[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        moved = np.array([Z[label == k].mean(0) if np.any(label == k) else centres[k] for k in range(n)])
        if np.allclose(moved, centres):
            break
        centres = moved
    taken: list[int] = []
    dist = ((Z[:, None, :] - centres[None]) ** 2).sum(-1)
    for k in np.argsort(dist.min(axis=0)):  # the centres closest to a config choose first
        order = np.argsort(dist[:, k])
        taken.append(int(next(i for i in order if i not in taken)))
    return sorted(taken)


def design_space(base: Predictor, configs: Sequence[Union[FasterViTConfig, Mapping[str, Any]]]) -> np.ndarray:
    """Rows of (log predicted images/s, ``DESIGN_FEATURES``), standardised over ``configs``."""
    X = _features(configs)
    model = base.models["images_per_s"]
    cols = [model.predict_log(X)] + [X[:, FEATURE_NAMES.index(f)] for f in DESIGN_FEATURES]
    Z = np.stack(cols, axis=1)
    sd = Z.std(axis=0)
    sd[sd == 0] = 1.0
    return (Z - Z.mean(axis=0)) / sd


def _kmeans_pp(Z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [Z[int(rng.integers(len(Z)))]]
    for _ in range(1, k):
        d = np.min(((Z[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        p = d / d.sum() if d.sum() > 0 else np.full(len(Z), 1 / len(Z))
        centres.append(Z[int(rng.choice(len(Z), p=p))])
    return np.asarray(centres, dtype=np.float64)


# ------------------------------------------------------------------------------------------ fit
def _measured(records: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The records that hold a measurement (a config and its images/s, no error)."""
    return [dict(r) for r in records if r.get("error") is None and r.get("images_per_s") and r.get("config")]


def _protocol(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """(mode, dtype, batch) of a record or a predictor's meta, as strings."""
    return tuple(str(meta.get(k)) for k in PROTOCOL_KEYS)


def of_protocol(base: Predictor, records: Sequence[Mapping[str, Any]]) -> tuple[list[dict], dict[str, int]]:
    """The measured records of ``base``'s protocol (mode, dtype, batch), and how many of each other
    protocol were set aside: a profile dataset holds its quick mode and a ``best`` subset in one file.

    Raises ``PredictorError`` when no measured record has the base's protocol."""
    want = _protocol(base.meta)
    kept: list[dict] = []
    aside: dict[str, int] = {}
    for r in _measured(records):
        if _protocol(r) == want:
            kept.append(r)
        else:
            label = ", ".join(f"{k} {r.get(k)}" for k in PROTOCOL_KEYS)
            aside[label] = aside.get(label, 0) + 1
    if not kept:
        found = "; ".join(f"{n} of {label}" for label, n in aside.items()) or "no measured record"
        raise PredictorError(f"no record has predictor {base.name!r}'s protocol "
                             f"({', '.join(f'{k} {base.meta.get(k)}' for k in PROTOCOL_KEYS)}); found {found}")
    return kept, aside


def _usable(base: Predictor, records: Sequence[Mapping[str, Any]]) -> tuple[list[dict], dict[str, Any]]:
    """The records with a throughput, checked against the base's protocol and for one GPU."""
    usable = _measured(records)
    for key in PROTOCOL_KEYS:
        seen = sorted({str(r.get(key)) for r in usable})
        if seen and seen != [str(base.meta.get(key))]:
            raise PredictorError(f"the records' {key} is {', '.join(seen)} but predictor {base.name!r} is for "
                                 f"{key} {base.meta.get(key)!r}: profile the new card with the base's protocol "
                                 f"({', '.join(f'{k} {base.meta.get(k)}' for k in PROTOCOL_KEYS)})")
    gpus = sorted({str(r.get("gpu_name")) for r in usable})
    if len(gpus) > 1:
        raise PredictorError(f"the records mix GPUs ({', '.join(gpus)}); one adapted predictor is for one card")
    return usable, dict(gpu_name=gpus[0] if gpus else None, driver=sorted({str(r.get("driver")) for r in usable}),
                        torch_version=sorted({str(r.get("torch_version")) for r in usable}))


def _correction_columns(model: Any, X: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """The correction's quantities standardised as the base's ridge standardises them."""
    idx = [LINEAR_FEATURES.index(f) for f in features]
    lin = X[:, [FEATURE_NAMES.index(f) for f in features]]
    return (lin - np.asarray(model.linear_mean)[idx]) / np.asarray(model.linear_scale)[idx]


def _ridge(Z: np.ndarray, r: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """(intercept, slopes) minimising |r - b - Z s|^2 + alpha |s|^2 (the intercept unpenalised)."""
    if Z.shape[1] == 0:
        return float(r.mean()), np.zeros(0)
    zm, rm = Z.mean(axis=0), r.mean()
    Zc = Z - zm
    s = np.linalg.solve(Zc.T @ Zc + alpha * np.eye(Z.shape[1]), Zc.T @ (r - rm))
    return float(rm - zm @ s), s


def _loo(Z: np.ndarray, r: np.ndarray, alpha: float) -> np.ndarray:
    """Leave-one-out predictions of the log residual ``r``."""
    out = np.empty(len(r))
    for i in range(len(r)):
        keep = np.arange(len(r)) != i
        b, s = _ridge(Z[keep], r[keep], alpha)
        out[i] = b + Z[i] @ s
    return out


def _errors(pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    rho = float(spearmanr(pred, true).statistic) if len(true) > 2 else float("nan")
    return dict(n=len(true), **relative_errors(pred, true), spearman=None if math.isnan(rho) else round(rho, 4))


def adapt(base: Predictor, records: Sequence[Mapping[str, Any]], *, name: str, correction: str = "auto",
          alpha: float = RIDGE_ALPHA, created: Optional[str] = None) -> Predictor:
    """``base`` corrected for the card of ``records`` (already measured there, the base's protocol).

    Per target of the base (images/s, batch-1 latency where the records have it) the log residual
    of the base's predictions is fitted by ``choose_correction``'s correction and folded into the
    base's ridge. ``meta["adapted"]`` holds the provenance and ``meta["cross_validated"]`` the
    leave-one-out error on the samples (each predicted by a correction fitted without it).
    """
    usable, card = _usable(base, records)
    c = choose_correction(len(usable), correction)
    X = _features([r["config"] for r in usable])
    models = {}
    coefs: dict[str, dict[str, float]] = {}
    loo: dict[str, dict[str, Any]] = {}
    for target, model in base.models.items():
        rows = [i for i, r in enumerate(usable) if isinstance(r.get(target), (int, float)) and r[target] > 0]
        if len(rows) < c.min_samples:
            if target == "images_per_s":
                raise PredictorError(f"{len(rows)} record(s) with {target}; correction {c.name!r} needs "
                                     f"{c.min_samples}")
            continue  # e.g. no batch-1 latency in the records: the adapted predictor gives images/s only
        y = np.asarray([usable[i][target] for i in rows], dtype=np.float64)
        base_log = model.predict_log(X[rows])
        resid = np.log(y) - base_log
        Z = _correction_columns(model, X[rows], c.features)
        b, s = _ridge(Z, resid, alpha)
        new = copy.deepcopy(model)
        lin = np.asarray(new.linear_coef, dtype=np.float64)
        for f, v in zip(c.features, s):
            lin[LINEAR_FEATURES.index(f)] += v
        new.linear_coef, new.linear_intercept = lin.tolist(), float(new.linear_intercept + b)
        models[target] = new
        coefs[target] = dict(factor=round(math.exp(b), 6), **{f: round(float(v), 6) for f, v in zip(c.features, s)})
        loo[target] = _errors(np.exp(base_log + _loo(Z, resid, alpha)), y)
    created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = dict(base.meta)
    meta.update(card, n_records=len(records), n_usable=len(usable), n_train=len(usable), n_held_out=0, held_out={},
                created=created, cross_validated=loo,
                adapted=dict(base=base.name, base_gpu=base.gpu, base_created=base.meta.get("created"),
                             base_n_train=base.meta.get("n_train"), gpu=card["gpu_name"], n_samples=len(usable),
                             date=created, correction=c.name, features=list(c.features), alpha=alpha,
                             coefficients=coefs, configs=[_arch(r["config"]) for r in usable]))
    return Predictor(name, meta, models)


def _arch(config: Mapping[str, Any]) -> str:
    return FasterViTConfig.from_dict(config).arch_id


def default_name(base: str, gpu: str, n: int) -> str:
    """``h200-to-h100-80gb-hbm3-n10``: base, card (lower case, without the vendor) and sample count."""
    card = re.sub(r"[^a-z0-9]+", "-", gpu.lower().replace("nvidia", "")).strip("-") or "gpu"
    return f"{base}-to-{card}-n{n}"


# ------------------------------------------------------------------------------------------ on the GPU
def adapt_on_gpu(base: Predictor, *, samples: int, records_path: Union[str, Path], name: Optional[str] = None,
                 correction: str = "auto", pool: int = 1000, space: str = "default", seed: int = 0,
                 device: Any = "cuda", gpu_name: Optional[str] = None, measure: Optional[Callable[..., Any]] = None,
                 progress: Callable[[int, int, dict[str, Any]], None] = lambda i, n, r: None) -> Predictor:
    """Choose ``samples`` configs of a ``pool`` sampled from ``space`` (``design``), profile them with
    the base's protocol into ``records_path`` (resumable: configs measured there already are not
    measured again) and ``adapt`` the base to them.

    ``measure``/``device``: the profiler and its device (tests pass a stand-in, no GPU needed).
    """
    from .predictor_dataset import RESOLUTIONS, DatasetFile, collect, record_key, sample_configs

    choose_correction(samples, correction)  # a too-small N fails before anything is measured
    lo, hi = (base.meta.get("resolutions") or [RESOLUTIONS[0], RESOLUTIONS[-1]])[:2]
    grid = tuple(r for r in RESOLUTIONS if lo <= r <= hi) or RESOLUTIONS
    candidates = sample_configs(space, pool, seed=seed, resolutions=grid)
    Z = design_space(base, candidates)
    chosen = design(base, candidates, samples, seed=seed)
    settings = {k: base.meta[k] for k in PROTOCOL_KEYS}
    failed: dict[int, str] = {}
    for _ in range(MAX_ROUNDS):
        collect([candidates[i] for i in chosen], records_path, device=device, measure=measure, progress=progress,
                **settings)
        by_key = {r.get("key"): r for r in DatasetFile(records_path).records()}
        for i in chosen:
            rec = by_key.get(record_key(candidates[i], **settings)) or {}
            if rec.get("error") or not rec.get("images_per_s"):
                failed[i] = str(rec.get("error") or "not measured")
        if not failed.keys() & set(chosen):
            break
        # a config this card cannot run (out of memory, say): the nearest candidate not tried stands in
        chosen = [i for i in chosen if i not in failed]
        for i in sorted(failed):
            free = [int(j) for j in np.argsort(((Z - Z[i]) ** 2).sum(1)) if j not in chosen and j not in failed]
            if free and len(chosen) < samples:
                chosen.append(free[0])
    else:
        why = "; ".join(sorted(set(failed.values())))[:300]
        raise PredictorError(f"{len(failed)} chosen config(s) could not be measured on this card in {MAX_ROUNDS} "
                             f"rounds of replacing them ({why}); see {records_path}")
    if len(chosen) < samples:
        raise PredictorError(f"the pool of {pool} candidates ran out: {len(failed)} failed on this card "
                             f"({'; '.join(sorted(set(failed.values())))[:300]}); use a larger --pool")
    keys = {record_key(candidates[i], **settings) for i in chosen}
    records = [r for r in DatasetFile(records_path).records() if r.get("key") in keys]
    gpus = sorted({str(r.get("gpu_name")) for r in records})
    return adapt(base, records, name=name or default_name(base.name, gpu_name or gpus[0], samples),
                 correction=correction)
