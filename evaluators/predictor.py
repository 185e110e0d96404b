"""Throughput (and batch-1 latency) of a config on one GPU, predicted from the config alone.

A search on a machine without the GPU asks a ``Predictor`` fitted on measurements of that GPU
(``bench/profile_dataset.py``, ``nas profile --sample``):

    >>> p = fit(read_records("h200.jsonl"), name="mine")     # doctest: +SKIP
    >>> p.predict(cfg)                                        # doctest: +SKIP
    {'images_per_s': 16011.2, 'latency_b1_ms': 1.93}
    >>> p.save("mine.json"); load_predictor("mine.json")     # doctest: +SKIP

Model, per target (log images/s, log latency): a ridge regression on the log scaling quantities
(MACs, bytes moved, weights, attention, tokens, blocks: the part that extrapolates to resolutions
outside the training grid) plus scikit-learn gradient-boosted trees on its residuals over all
features of ``evaluators.predictor_features`` (HELP and nn-Meter show per-block counts carry most of
a latency model; the trees take the kernel-choice effects the counts miss). The file is JSON (the
trees as arrays, evaluated here with numpy): small, diff-able, loadable without pickle and across
scikit-learn versions; scikit-learn is needed only to fit.

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

from .predictor_features import FEATURE_NAMES, LINEAR_FEATURES, config_features

__all__ = ["PredictorError", "Predictor", "TARGETS", "fit", "evaluate", "read_records", "check_records",
           "register_predictor", "PREDICTORS", "load_predictor", "known_predictors", "SHIPPED_DIR"]

FORMAT = "nas-throughput-predictor"
VERSION = 1
#: record key -> what it is; both are fitted on log scale
TARGETS = {"images_per_s": "images/s at the profiler's batch size", "latency_b1_ms": "batch-1 latency, ms"}
#: facts that must agree across the records of one predictor (they change what is measured)
SETTING_KEYS = ("gpu_name", "mode", "dtype", "batch_size")
SHIPPED_DIR = Path(__file__).with_name("predictors")
MIN_RECORDS = 10


class PredictorError(ValueError):
    """A predictor cannot be fitted, found or loaded; the message says why and what to do."""


# ------------------------------------------------------------------------------------------ records
def read_records(path: Union[str, Path]) -> list[dict[str, Any]]:
    """Records of a dataset file: JSON lines (one profiler record with its ``config`` per line) or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise PredictorError(f"dataset {p} does not exist (collect one with `nas profile --sample N --out {p}`)")
    text = p.read_text()
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


@dataclass
class _TargetModel:
    """log(target) = ridge(log scaling features) + learning_rate * sum(trees(all features))."""

    linear_coef: list[float]
    linear_intercept: float
    linear_mean: list[float]
    linear_scale: list[float]
    gbr_init: float
    learning_rate: float
    trees: list[dict[str, list]]

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        lin = _linear_columns(X)
        base = ((lin - np.asarray(self.linear_mean)) / np.asarray(self.linear_scale)) @ np.asarray(self.linear_coef)
        resid = self.gbr_init + self.learning_rate * sum((_tree_predict(t, X) for t in self.trees), np.zeros(len(X)))
        return base + self.linear_intercept + resid

    def to_dict(self) -> dict[str, Any]:
        return dict(linear=dict(features=list(LINEAR_FEATURES), coef=self.linear_coef, intercept=self.linear_intercept,
                                mean=self.linear_mean, scale=self.linear_scale),
                    gbr=dict(init=self.gbr_init, learning_rate=self.learning_rate, trees=self.trees))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "_TargetModel":
        lin, gbr = d["linear"], d["gbr"]
        if list(lin["features"]) != list(LINEAR_FEATURES):
            raise PredictorError(f"predictor file's linear features {lin['features']} are not this version's "
                                 f"{list(LINEAR_FEATURES)}; refit it (`nas predictor fit`)")
        return cls(list(lin["coef"]), float(lin["intercept"]), list(lin["mean"]), list(lin["scale"]),
                   float(gbr["init"]), float(gbr["learning_rate"]), list(gbr["trees"]))


_LINEAR_IDX = [FEATURE_NAMES.index(n) for n in LINEAR_FEATURES]


def _linear_columns(X: np.ndarray) -> np.ndarray:
    return X[:, _LINEAR_IDX]


def _fit_target(X: np.ndarray, y: np.ndarray, *, seed: int, n_estimators: int, max_depth: int,
                learning_rate: float) -> _TargetModel:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge

    lin = _linear_columns(X)
    mean, scale = lin.mean(axis=0), lin.std(axis=0)
    scale[scale == 0] = 1.0
    ridge = Ridge(alpha=1e-3).fit((lin - mean) / scale, y)
    resid = y - ridge.predict((lin - mean) / scale)
    gbr = GradientBoostingRegressor(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                    subsample=0.8, random_state=seed).fit(X, resid)
    init = float(gbr.init_.constant_.ravel()[0])
    return _TargetModel(ridge.coef_.tolist(), float(ridge.intercept_), mean.tolist(), scale.tolist(), init,
                        learning_rate, [_tree_arrays(est) for est in gbr.estimators_[:, 0]])


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

    def describe(self) -> str:
        """One line: name, GPU, protocol, how much data, held-out error."""
        m, h = self.meta, self.meta.get("held_out") or {}
        err = h.get("images_per_s") or {}
        rho = "n/a" if err.get("spearman") is None else f"{err['spearman']:.3f}"
        acc = f"; held-out {err['within_10pct']:.0%} within ±10%, Spearman {rho}" if err.get("n") else ""
        return (f"{self.name}: {m.get('gpu_name')} ({m.get('mode')}, {m.get('dtype')}, batch {m.get('batch_size')}), "
                f"{m.get('n_train')} training configs{acc}")

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
            return cls.from_dict(json.loads(p.read_text()), source=str(p))
        except (OSError, json.JSONDecodeError) as e:
            raise PredictorError(f"cannot read predictor file {p}: {e}") from None


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
    X = _features(r["config"] for r in train)
    models = {}
    for target in TARGETS:
        rows = [i for i, r in enumerate(train) if isinstance(r.get(target), (int, float)) and r[target] > 0]
        if len(rows) < MIN_RECORDS:
            continue  # e.g. no batch-1 latency measured: this predictor gives images/s only
        y = np.log([train[i][target] for i in rows])
        models[target] = _fit_target(X[rows], y, seed=seed, n_estimators=n_estimators, max_depth=max_depth,
                                     learning_rate=learning_rate)
    if "images_per_s" not in models:
        raise PredictorError(f"{len(train)} training record(s) after holding out {n_test}: at least {MIN_RECORDS} "
                             f"are needed; collect more or lower held_out")
    resolutions = sorted({_side(r["config"]) for r in train})
    meta = dict(settings, n_records=len(records), n_usable=len(usable), n_train=len(train), n_held_out=len(test),
                resolutions=[resolutions[0], resolutions[-1]] if resolutions else [],
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"), seed=seed,
                model=dict(kind="ridge(log features) + sklearn GradientBoostingRegressor on residuals",
                           n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate))
    predictor = Predictor(name, meta, models)
    meta["held_out"] = evaluate(predictor, test) if test else {}
    return predictor


def _side(config: Mapping[str, Any]) -> int:
    res = config.get("resolution", 224)
    return int(res if isinstance(res, int) else max(res))


def evaluate(predictor: Predictor, records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target: n, share within ±10 %, Spearman rank correlation, median and worst relative error."""
    from scipy.stats import spearmanr

    out: dict[str, dict[str, Any]] = {}
    preds = predictor.predict_many([r["config"] for r in records]) if records else []
    for target in predictor.targets:
        pairs = [(p[target], r[target]) for p, r in zip(preds, records)
                 if isinstance(r.get(target), (int, float)) and r[target] > 0]
        if not pairs:
            continue
        pred, true = np.asarray(pairs).T
        rel = np.abs(pred / true - 1)
        rho = float(spearmanr(pred, true).statistic) if len(pairs) > 2 else None
        out[target] = dict(n=len(pairs), within_10pct=round(float(np.mean(rel <= 0.10)), 4),
                           spearman=None if rho is None or math.isnan(rho) else round(rho, 4),
                           median_rel_err=round(float(np.median(rel)), 4), max_rel_err=round(float(rel.max()), 4))
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
            f"`python bench/profile_dataset.py` on that GPU, then `nas predictor fit results/benchmarks/"
            f"profile-dataset.jsonl --mode cudagraph --name {name} --out {path}`")
    return Predictor.load(path)


@register_predictor("h200")
def h200() -> Predictor:
    """NVIDIA H200, cudagraph mode, fp16, batch 128 (bench/profile_dataset.py)."""
    return _shipped("h200")


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
