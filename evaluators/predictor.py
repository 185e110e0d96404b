"""Throughput (and batch-1 latency) of a config on one GPU, predicted from the config alone.

A search on a machine without the GPU asks a ``Predictor`` fitted on measurements of that GPU
(``bench/profile_dataset.py``, ``nas profile --sample``):

    >>> p = fit(read_records("h200.jsonl"), name="mine")     # doctest: +SKIP
    >>> p.predict(cfg)                                        # doctest: +SKIP
    {'images_per_s': 16011.2, 'latency_b1_ms': 1.93}
    >>> p.save("mine.json"); load_predictor("mine.json")     # doctest: +SKIP

Model, per target (images/s at the profiler's batch, batch-1 latency): a physical base and trees.
The base is a per-kernel roofline of the forward pass (``evaluators.predictor_kernels``: every kernel
the deployed fp16 model launches, with its FLOPs padded to tiles and waves and its bytes) summed per
kind (cuBLAS GEMMs, cuDNN convolutions, fused attention, its softmax work, fp32 norms, other memory
kernels), two network-level roofline terms (all MACs at peak, activation bytes at HBM bandwidth)
and a cost per kernel launched; the time of the timed call is a non-negative combination
of these sums, fitted by least squares on the relative error (one scale factor per kind: how far
below peak that kind runs on this GPU, and the launch floor). It carries the scaling to
configurations and resolutions outside the training grid. A ridge regression on the log scaling
quantities (MACs, bytes, weights, attention, tokens, blocks) bends it where a GPU's costs do not
add up like the roofline's, and scikit-learn gradient-boosted trees fit what is left of the log
residual over all features of ``evaluators.predictor_features`` (kernel choices the roofline
misses). ``cross_validate`` measures it by repeated K-fold (``bench/predictor_cv.py``). The file is
JSON (the trees as arrays, evaluated here with numpy): small, diff-able, loadable without pickle and
across scikit-learn versions; scikit-learn and scipy are needed only to fit.

One predictor = one GPU, one profiler mode, dtype and batch size: ``fit`` refuses records that mix
them (naming both). Shipped predictors are registered by name (``@register_predictor``); a name can
also be a JSON file, or ``NAME.json`` in a folder the caller names (``results/predictors``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from search_spaces import FasterViTConfig
from search_spaces.files import read_text

from .predictor_features import FEATURE_NAMES, LINEAR_FEATURES, config_features
from .predictor_kernels import KINDS

__all__ = ["PredictorError", "Predictor", "TARGETS", "fit", "evaluate", "cross_validate", "read_records",
           "check_records", "register_predictor", "PREDICTORS", "load_predictor", "known_predictors", "SHIPPED_DIR"]

FORMAT = "nas-throughput-predictor"
VERSION = 2  # 2: kernel-model base (version 1: ridge on log counts), kernel features
#: record key -> what it is; both are fitted on log scale
TARGETS = {"images_per_s": "images/s at the profiler's batch size", "latency_b1_ms": "batch-1 latency, ms"}
#: per target: the batch of the kernel-model columns of its base (``KERNEL_BATCHES``) and how the
#: time of one timed call (microseconds) gives the target: value = scale * time ** power
_BASE = {"images_per_s": dict(batch=128, power=-1.0), "latency_b1_ms": dict(batch=1, power=1.0)}
#: ridge penalty of the log-linear correction of the base (standardised log scaling quantities):
#: strong enough that it only bends the base where the data insist
RIDGE_ALPHA = 1.0
#: facts that must agree across the records of one predictor (they change what is measured)
SETTING_KEYS = ("gpu_name", "mode", "dtype", "batch_size")
SHIPPED_DIR = Path(__file__).with_name("predictors")
#: scaling quantities whose training range a predictor records: a config beyond it is extrapolated
#: (trees are flat outside their data; only the base and the ridge carry the trend), and says so
RANGE_FEATURES = LINEAR_FEATURES
MIN_RECORDS = 10


class PredictorError(ValueError):
    """A predictor cannot be fitted, found or loaded; the message says why and what to do."""


# ------------------------------------------------------------------------------------------ records
def read_records(path: Union[str, Path]) -> list[dict[str, Any]]:
    """Records of a dataset file: JSON lines (one profiler record with its ``config`` per line) or a JSON list."""
    p = Path(path)
    if not p.exists():
        raise PredictorError(f"dataset {p} does not exist (collect one with `nas profile --sample N --out {p}`)")
    try:
        text = read_text(p, "a dataset of profiler records (JSON lines, `nas profile --sample N --out FILE`)")
    except ValueError as e:
        raise PredictorError(str(e)) from None
    if text.lstrip().startswith("["):
        return list(json.loads(text))
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(text.splitlines()):  # a torn last line (the writer was killed): skip it
                continue
            raise PredictorError(f"{p}:{i}: not a JSON record ({e.msg})") from None
    return out


def check_records(records: Sequence[Mapping[str, Any]], *, mode: Optional[str] = None) -> tuple[list[dict], dict]:
    """(usable records, their shared settings); refuses mixed GPUs/modes/dtypes/batches by name.

    ``mode``: keep only records of this profiler mode (a dataset may hold the quick and ``best`` modes).
    Records with an error or no throughput are left out (not an error).
    """
    usable = [dict(r) for r in records if r.get("error") is None and r.get("images_per_s") and r.get("config")]
    if mode is not None:
        usable = [r for r in usable if r.get("mode") == mode]
    if len(usable) < MIN_RECORDS:
        raise PredictorError(f"{len(usable)} usable record(s){f' in mode {mode!r}' if mode else ''}; a predictor "
                             f"needs at least {MIN_RECORDS} (records with an error or no images_per_s are left out)")
    settings = {}
    for key in SETTING_KEYS:
        seen: dict[Any, int] = {}
        for r in usable:
            seen[r.get(key)] = seen.get(r.get(key), 0) + 1
        if len(seen) > 1:
            what = ", ".join(f"{v!r} ({n} records)" for v, n in seen.items())
            hint = " measured on different GPUs" if key == "gpu_name" else ""
            how = "choose one with mode= (--mode)" if key == "mode" else "fit one per " + key + " (split the file)"
            raise PredictorError(f"the records mix {key}: {what}; one predictor is for one {key}{hint}: {how}")
        settings[key] = next(iter(seen))
    for key in ("driver", "torch_version"):
        settings[key] = sorted({str(r.get(key)) for r in usable})
    return usable, settings


# ------------------------------------------------------------------------------------------ model pieces
def _tree_arrays(tree: Any) -> dict[str, list]:
    t = tree.tree_
    return dict(feature=t.feature.tolist(), threshold=t.threshold.tolist(), left=t.children_left.tolist(),
                right=t.children_right.tolist(), value=t.value[:, 0, 0].tolist())


def _tree_predict(tree: Mapping[str, list], X: np.ndarray) -> np.ndarray:
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
    left, right, value = np.asarray(tree["left"]), np.asarray(tree["right"]), np.asarray(tree["value"])
    node = np.zeros(len(X), dtype=np.int64)
    rows = np.arange(len(X))
    while True:
        inner = left[node] != -1
        if not inner.any():
            return value[node]
        go_left = X[rows, np.maximum(feature[node], 0)] <= threshold[node]
        node = np.where(inner, np.where(go_left, left[node], right[node]), node)


def base_features(target: str) -> list[str]:
    """Kernel-model columns whose non-negative combination is ``target``'s time per timed call."""
    batch = _BASE[target]["batch"]
    return [f"b{batch}_{kind}_us" for kind in KINDS + ("macs", "act")] + ["kernels"]


def _base_scale(target: str, batch_size: int) -> float:
    """value = scale * microseconds ** power: images/s = batch * 1e6 / us; latency ms = us / 1e3."""
    return batch_size * 1e6 if target == "images_per_s" else 1e-3


@dataclass
class _TargetModel:
    """log(target) = log(scale * (X[base] @ coef) ** power) + ridge(log scaling quantities)
    + learning_rate * sum(trees(all features))."""

    base_features: list[str]
    base_coef: list[float]
    base_scale: float
    base_power: float
    linear_coef: list[float]
    linear_intercept: float
    linear_mean: list[float]
    linear_scale: list[float]
    gbr_init: float
    learning_rate: float
    trees: list[dict[str, list]]

    def base_log(self, X: np.ndarray) -> np.ndarray:
        """Log of the physical base's value (``_BASE``) for each row of ``X``."""
        idx = [FEATURE_NAMES.index(n) for n in self.base_features]
        us = X[:, idx] @ np.asarray(self.base_coef)
        if not np.all(us > 0):
            raise PredictorError(f"the kernel-model base predicts no time for {int(np.sum(us <= 0))} config(s) "
                                 f"(coefficients {self.base_coef} on {self.base_features}); refit on more varied "
                                 f"records")
        return math.log(self.base_scale) + self.base_power * np.log(us)

    def linear_log(self, X: np.ndarray) -> np.ndarray:
        """The ridge correction of the base (log scale) for each row of ``X``."""
        z = (_linear_columns(X) - np.asarray(self.linear_mean)) / np.asarray(self.linear_scale)
        return z @ np.asarray(self.linear_coef) + self.linear_intercept

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        resid = self.gbr_init + self.learning_rate * sum((_tree_predict(t, X) for t in self.trees), np.zeros(len(X)))
        return self.base_log(X) + self.linear_log(X) + resid

    def to_dict(self) -> dict[str, Any]:
        return dict(base=dict(features=self.base_features, coef=self.base_coef, scale=self.base_scale,
                              power=self.base_power),
                    linear=dict(features=list(LINEAR_FEATURES), coef=self.linear_coef, intercept=self.linear_intercept,
                                mean=self.linear_mean, scale=self.linear_scale),
                    gbr=dict(init=self.gbr_init, learning_rate=self.learning_rate, trees=self.trees))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "_TargetModel":
        base, lin, gbr = d["base"], d["linear"], d["gbr"]
        unknown = [n for n in base["features"] if n not in FEATURE_NAMES]
        if unknown or list(lin["features"]) != list(LINEAR_FEATURES):
            raise PredictorError(f"predictor file's base features {base['features']} or linear features "
                                 f"{lin['features']} are not this version's; refit it (`nas predictor fit`)")
        return cls(list(base["features"]), [float(c) for c in base["coef"]], float(base["scale"]),
                   float(base["power"]), list(lin["coef"]), float(lin["intercept"]), list(lin["mean"]),
                   list(lin["scale"]), float(gbr["init"]), float(gbr["learning_rate"]), list(gbr["trees"]))


_LINEAR_IDX = [FEATURE_NAMES.index(n) for n in LINEAR_FEATURES]


def _linear_columns(X: np.ndarray) -> np.ndarray:
    return X[:, _LINEAR_IDX]


def _fit_base(X: np.ndarray, y: np.ndarray, target: str,
              batch_size: int) -> tuple[list[str], list[float], float, float]:
    """Non-negative least squares of the measured time on the kernel-model sums, relative error.

    Each row is divided by its measured time, so every config weighs the same whatever its speed
    and the coefficients are what a kind's roofline time must be multiplied by on this GPU.
    """
    from scipy.optimize import nnls

    names = base_features(target)
    scale, power = _base_scale(target, batch_size), _BASE[target]["power"]
    us = (y / scale) ** (1.0 / power)
    A = X[:, [FEATURE_NAMES.index(n) for n in names]] / us[:, None]
    coef, _ = nnls(A, np.ones(len(y)))
    return names, coef.tolist(), scale, power


def _fit_target(X: np.ndarray, y: np.ndarray, *, target: str, batch_size: int, seed: int, n_estimators: int,
                max_depth: int, learning_rate: float) -> _TargetModel:
    """The base on the kernel-model sums, a ridge on the log residual, trees on what is left.

    ``y`` is in the target's units; ``n_estimators=0`` leaves the trees out.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge

    names, coef, scale, power = _fit_base(X, y, target, batch_size)
    lin = _linear_columns(X)
    mean, std = lin.mean(axis=0), lin.std(axis=0)
    std[std == 0] = 1.0
    model = _TargetModel(names, coef, scale, power, [0.0] * len(mean), 0.0, mean.tolist(), std.tolist(), 0.0,
                         learning_rate, [])
    resid = np.log(y) - model.base_log(X)
    ridge = Ridge(alpha=RIDGE_ALPHA).fit((lin - mean) / std, resid)
    model.linear_coef, model.linear_intercept = ridge.coef_.tolist(), float(ridge.intercept_)
    resid = resid - model.linear_log(X)
    if n_estimators:  # 0: the base and its log-linear correction alone (bench/predictor_cv.py compares)
        gbr = GradientBoostingRegressor(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                        subsample=0.8, random_state=seed).fit(X, resid)
        model.gbr_init = float(gbr.init_.constant_.ravel()[0])
        model.trees = [_tree_arrays(est) for est in gbr.estimators_[:, 0]]
    return model


def _features(configs: Iterable[Union[FasterViTConfig, Mapping[str, Any]]]) -> np.ndarray:
    rows = []
    for c in configs:
        cfg = c if isinstance(c, FasterViTConfig) else FasterViTConfig.from_dict(c)
        f = config_features(cfg)
        rows.append([f[n] for n in FEATURE_NAMES])
    return np.asarray(rows, dtype=np.float64)


# ------------------------------------------------------------------------------------------ predictor
@dataclass
class Predictor:
    """A fitted predictor: ``predict(cfg)`` -> images/s (and batch-1 latency) on ``meta["gpu_name"]``."""

    name: str
    meta: dict[str, Any]
    models: dict[str, _TargetModel] = field(repr=False)

    @property
    def gpu(self) -> str:
        return str(self.meta.get("gpu_name"))

    @property
    def targets(self) -> list[str]:
        return list(self.models)

    def predict(self, cfg: Union[FasterViTConfig, Mapping[str, Any]]) -> dict[str, float]:
        """{target: predicted value} for one config (``images_per_s``; ``latency_b1_ms`` when fitted)."""
        return self.predict_many([cfg])[0]

    def predict_many(self, configs: Sequence[Union[FasterViTConfig, Mapping[str, Any]]]) -> list[dict[str, float]]:
        X = _features(configs)
        cols = {k: np.exp(m.predict_log(X)) for k, m in self.models.items()}
        return [{k: round(float(v[i]), 4) for k, v in cols.items()} for i in range(len(X))]

    def outside_range(self, cfg: Union[FasterViTConfig, Mapping[str, Any]]) -> list[str]:
        """The scaling quantities of ``cfg`` outside the training configs' range (``[]``: inside).

        Beyond it a prediction is an extrapolation (e.g. FasterViT-4..6 from a dataset of the default
        space); the search records these names with the predicted values. Files without a recorded
        range (fitted before it was kept) give ``[]``.
        """
        ranges = self.meta.get("feature_range") or {}
        f = config_features(cfg if isinstance(cfg, FasterViTConfig) else FasterViTConfig.from_dict(cfg))
        return [n for n, (lo, hi) in ranges.items() if not lo - _RANGE_SLACK <= f[n] <= hi + _RANGE_SLACK]

    def describe(self) -> str:
        """One line: name, GPU, protocol, how much data, held-out error."""
        m, h = self.meta, self.meta.get("held_out") or {}
        err = h.get("images_per_s") or {}
        rho = "n/a" if err.get("spearman") is None else f"{err['spearman']:.3f}"
        acc = f"; held-out {err['within_10pct']:.0%} within ±10%, Spearman {rho}" if err.get("n") else ""
        setting = f"{m.get('gpu_name')} ({m.get('mode')}, {m.get('dtype')}, batch {m.get('batch_size')})"
        a = m.get("adapted")
        if a:  # evaluators.predictor_transfer.adapt: provenance and leave-one-out error instead of a held-out split
            loo = (m.get("cross_validated") or {}).get("images_per_s") or {}
            return (f"{self.name}: {setting}, adapted from {a['base']} ({a['base_gpu']}) with {a['n_samples']} "
                    f"configs on {str(a['date'])[:10]} ({a['correction']} correction); leave-one-out "
                    f"{loo.get('within_10pct', 0):.0%} within ±10%")
        return f"{self.name}: {setting}, {m.get('n_train')} training configs{acc}"

    def to_dict(self) -> dict[str, Any]:
        return dict(format=FORMAT, version=VERSION, name=self.name, meta=self.meta, features=list(FEATURE_NAMES),
                    targets={k: m.to_dict() for k, m in self.models.items()})

    def save(self, path: Union[str, Path]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        tmp.replace(p)
        return p

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "predictor") -> "Predictor":
        if d.get("format") != FORMAT:
            raise PredictorError(f"{source} is not a nas predictor file (format {d.get('format')!r}, not {FORMAT!r})")
        if d.get("version") != VERSION or list(d.get("features", ())) != list(FEATURE_NAMES):
            raise PredictorError(f"{source} was written by another version of the predictor (version "
                                 f"{d.get('version')}, {len(d.get('features', ()))} features); refit it with "
                                 f"`nas predictor fit DATASET`")
        return cls(str(d["name"]), dict(d["meta"]), {k: _TargetModel.from_dict(v) for k, v in d["targets"].items()})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Predictor":
        p = Path(path)
        try:
            data = json.loads(read_text(p, "a predictor JSON file (`nas predictor fit`)"))
        except (OSError, ValueError) as e:  # missing, a folder, binary data, not JSON
            raise PredictorError(f"cannot read predictor file {p}: {e}") from None
        return cls.from_dict(data, source=str(p))


def fit(records: Sequence[Mapping[str, Any]], *, name: str, mode: Optional[str] = None, held_out: float = 0.2,
        seed: int = 0, n_estimators: int = 300, max_depth: int = 3, learning_rate: float = 0.05) -> Predictor:
    """Fit on ``records`` (profiler records with their ``config``); ``held_out`` of them are kept apart.

    The model is fitted on the other configs and its error on the held-out ones goes into
    ``meta["held_out"]`` (within ±10 %, Spearman, median error), so the numbers describe the model
    that is saved. ``mode``: fit on this profiler mode only (default: the records' one mode).
    """
    if not 0 <= held_out < 1:
        raise PredictorError(f"held_out={held_out!r} must be in [0, 1)")
    usable, settings = check_records(records, mode=mode)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    n_test = int(round(held_out * len(usable)))
    test, train = [usable[i] for i in order[:n_test]], [usable[i] for i in order[n_test:]]
    batch_size = settings["batch_size"]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictorError(f"the records' batch_size is {batch_size!r}: the throughput base needs the batch of "
                             f"the timed call (profiler records carry it)")
    X = _features(r["config"] for r in train)
    models = {}
    for target in TARGETS:
        rows = [i for i, r in enumerate(train) if isinstance(r.get(target), (int, float)) and r[target] > 0]
        if len(rows) < MIN_RECORDS:
            continue  # e.g. no batch-1 latency measured: this predictor gives images/s only
        y = np.asarray([train[i][target] for i in rows], dtype=np.float64)
        models[target] = _fit_target(X[rows], y, target=target, batch_size=batch_size, seed=seed,
                                     n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate)
    if "images_per_s" not in models:
        raise PredictorError(f"{len(train)} training record(s) after holding out {n_test}: at least {MIN_RECORDS} "
                             f"are needed; collect more or lower held_out")
    resolutions = sorted({_side(r["config"]) for r in train})
    meta = dict(settings, n_records=len(records), n_usable=len(usable), n_train=len(train), n_held_out=len(test),
                resolutions=[resolutions[0], resolutions[-1]] if resolutions else [],
                feature_range=feature_range(X),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"), seed=seed,
                model=dict(kind="NNLS of time on kernel-model roofline sums + ridge on log scaling quantities + "
                                "sklearn GradientBoostingRegressor on log residuals",
                           base={k: dict(zip(m.base_features, m.base_coef)) for k, m in models.items()},
                           n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate))
    predictor = Predictor(name, meta, models)
    meta["held_out"] = evaluate(predictor, test) if test else {}
    return predictor


_RANGE_SLACK = 1e-9  # float noise only: a config of the training set is inside


def feature_range(X: np.ndarray) -> dict[str, list[float]]:
    """[min, max] of each ``RANGE_FEATURES`` quantity over the rows of a feature matrix (``_features``)."""
    cols = {n: X[:, FEATURE_NAMES.index(n)] for n in RANGE_FEATURES}
    return {n: [float(c.min()), float(c.max())] for n, c in cols.items()}


def _side(config: Mapping[str, Any]) -> int:
    res = config.get("resolution", 224)
    return int(res if isinstance(res, int) else max(res))


def relative_errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Shares of predictions within ±10 % and ±5 % of the measured values, the median and the largest relative error."""
    rel = np.abs(np.asarray(pred) / np.asarray(true) - 1)
    return dict(within_10pct=round(float(np.mean(rel <= 0.10)), 4), within_5pct=round(float(np.mean(rel <= 0.05)), 4),
                median_rel_err=round(float(np.median(rel)), 4), max_rel_err=round(float(rel.max()), 4))


def evaluate(predictor: Predictor, records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target: n, share within ±10 % (and ±5 %), Spearman rank correlation, median and worst relative error."""
    from scipy.stats import spearmanr

    out: dict[str, dict[str, Any]] = {}
    preds = predictor.predict_many([r["config"] for r in records]) if records else []
    for target in predictor.targets:
        pairs = [(p[target], r[target]) for p, r in zip(preds, records)
                 if isinstance(r.get(target), (int, float)) and r[target] > 0]
        if not pairs:
            continue
        pred, true = np.asarray(pairs).T
        errors = relative_errors(pred, true)
        rho = float(spearmanr(pred, true).statistic) if len(pairs) > 2 else None
        out[target] = dict(n=len(pairs), within_10pct=errors["within_10pct"], within_5pct=errors["within_5pct"],
                           spearman=None if rho is None or math.isnan(rho) else round(rho, 4),
                           median_rel_err=errors["median_rel_err"], max_rel_err=errors["max_rel_err"])
    return out


#: fit(X_train, y_train, target, batch_size, seed) -> a model with predict_log(X) (``cross_validate``)
Fitter = Callable[[np.ndarray, np.ndarray, str, int, int], Any]


def _default_fitter(n_estimators: int, max_depth: int, learning_rate: float) -> Fitter:
    def fitter(X: np.ndarray, y: np.ndarray, target: str, batch_size: int, seed: int) -> _TargetModel:
        return _fit_target(X, y, target=target, batch_size=batch_size, seed=seed, n_estimators=n_estimators,
                           max_depth=max_depth, learning_rate=learning_rate)

    return fitter


def cross_validate(records: Sequence[Mapping[str, Any]], *, folds: int = 5, repeats: int = 5, seed: int = 0,
                   mode: Optional[str] = None, fitter: Optional[Fitter] = None, n_estimators: int = 300,
                   max_depth: int = 3, learning_rate: float = 0.05) -> dict[str, dict[str, Any]]:
    """Repeated K-fold cross-validation: each config predicted ``repeats`` times by models that never saw it.

    The held-out 20 % of ``fit`` is one draw of one split; this averages over ``folds`` x
    ``repeats`` fits (sklearn ``RepeatedKFold``, seeded), so its numbers move less with the split.
    Per target: n, share of all out-of-fold predictions within ±10 % and ±5 %, Spearman (per repeat,
    then the mean), median relative error, and ``predictions`` (repeats x n, in record order of the
    usable records). ``fitter`` replaces the predictor's own model (``bench/predictor_cv.py``
    compares version 1's).
    """
    from scipy.stats import spearmanr
    from sklearn.model_selection import RepeatedKFold

    usable, settings = check_records(records, mode=mode)
    fitter = fitter or _default_fitter(n_estimators, max_depth, learning_rate)
    X = _features(r["config"] for r in usable)
    out: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        rows = [i for i, r in enumerate(usable) if isinstance(r.get(target), (int, float)) and r[target] > 0]
        if len(rows) < max(MIN_RECORDS, folds):
            continue
        Xt, y = X[rows], np.asarray([usable[i][target] for i in rows], dtype=np.float64)
        pred = np.zeros((repeats, len(rows)))
        splits = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed).split(Xt)
        for k, (train, test) in enumerate(splits):
            model = fitter(Xt[train], y[train], target, int(settings["batch_size"]), seed)
            pred[k // folds, test] = np.exp(model.predict_log(Xt[test]))
        errors = relative_errors(pred, y)
        out[target] = dict(n=len(rows), within_10pct=errors["within_10pct"], within_5pct=errors["within_5pct"],
                           spearman=round(float(np.mean([spearmanr(p, y).statistic for p in pred])), 4),
                           median_rel_err=errors["median_rel_err"], rows=rows, predictions=pred.tolist())
    return out


# ------------------------------------------------------------------------------------------ registry
PREDICTORS: dict[str, Callable[[], Predictor]] = {}


def register_predictor(name: str) -> Callable[[Callable[[], Predictor]], Callable[[], Predictor]]:
    """Register a shipped predictor: ``@register_predictor("h200") def h200(): return _shipped("h200")``."""

    def deco(fn: Callable[[], Predictor]) -> Callable[[], Predictor]:
        if name in PREDICTORS:
            raise ValueError(f"predictor {name!r} is already registered")
        PREDICTORS[name] = fn
        return fn

    return deco


def _shipped(name: str) -> Predictor:
    path = SHIPPED_DIR / f"{name}.json"
    if not path.is_file():
        raise PredictorError(
            f"predictor {name!r} is registered but its file {path} is not shipped yet: collect the data with "
            f"`python bench/profile_dataset.py --out {SHIPPED_DIR / (name + '-profile.jsonl')}` on that GPU, then "
            f"`nas predictor fit {SHIPPED_DIR / (name + '-profile.jsonl')} --mode cudagraph --name {name} "
            f"--out {path}`")
    return Predictor.load(path)


@register_predictor("h200")
def h200() -> Predictor:
    """NVIDIA H200, cudagraph mode, fp16, batch 128 (bench/profile_dataset.py)."""
    return _shipped("h200")


@register_predictor("h100")
def h100() -> Predictor:
    """NVIDIA H100 80GB HBM3, cudagraph mode, fp16, batch 128 (bench/profile_dataset.py)."""
    return _shipped("h100")


def known_predictors(search_dirs: Sequence[Union[str, Path]] = ()) -> list[str]:
    """Registered names and the ``NAME.json`` predictors in ``search_dirs``."""
    names = set(PREDICTORS)
    for d in search_dirs:
        names.update(p.stem for p in Path(d).glob("*.json") if p.is_file())
    return sorted(names)


def load_predictor(spec: str, *, search_dirs: Sequence[Union[str, Path]] = ()) -> Predictor:
    """A predictor by registered name, by ``NAME.json`` in ``search_dirs``, or from a JSON file path.

    An unknown name is a ``PredictorError`` listing the known ones.
    """
    for d in search_dirs:
        path = Path(d) / f"{spec}.json"
        if path.is_file():
            return Predictor.load(path)
    if spec in PREDICTORS:
        return PREDICTORS[spec]()
    if spec.endswith(".json") or "/" in spec:
        if not Path(spec).is_file():
            raise PredictorError(f"predictor file {spec} does not exist")
        return Predictor.load(spec)
    known = known_predictors(search_dirs)
    where = "".join(f", {d}/NAME.json" for d in search_dirs)
    raise PredictorError(f"unknown predictor {spec!r}; known: {', '.join(known) if known else 'none'} (registered "
                         f"names{where} or a path to a predictor JSON; fit one with `nas predictor fit DATASET "
                         f"--name NAME`)")
