#!/usr/bin/env python
"""Cross-validated error of the throughput predictor: version 1's features and model against the current ones.

Repeated K-fold over the configs of a profiled dataset (``evaluators.predictor.cross_validate``; by
default 5 folds x 5 repeats, seed 0): every config is predicted once per repeat by a model that
never saw it. Per target (images/s at the profiler's batch, batch-1 latency): share of the
predictions within ±10 % and ±5 % of the measurement, Spearman (per repeat, then the mean), median
absolute error, and the configs predicted worst (mean error over the repeats). Models:

- ``v1``: predictor version 1 (commit 123c89f), rebuilt here: ridge on its log counts plus trees
  on its features (``V1_FEATURE_NAMES``), same tree settings;
- ``v2``: the current predictor (kernel-model base, ridge, trees on all features);
- ``v2_no_trees``: its base and ridge alone (the part that carries the trend beyond the data).

Also a resolution split (fit on the configs at <= 384 px, test on the larger ones: extrapolation),
the one held-out split ``nas predictor fit`` reports (20 %, seed 0),
``--nested``: tree depth chosen per outer fold by an inner 3-fold CV (does a tuned depth beat the
default?), and the measurement noise floor read from the records (spread of the timed repeats
within a run, power-cap throttling, SM clocks). Writes ``results/benchmarks/predictor-cv.json``
(not ``predictor-summary.json``: that one is ``bench/profile_dataset.py``'s). No GPU; a few
minutes on two CPU cores (``--nested``: about ten more)::

    PYTHONPATH=. python bench/predictor_cv.py [--nested]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluators.predictor import (TARGETS, _fit_target, _linear_columns, _tree_arrays, _tree_predict,  # noqa: E402
                                  check_records, cross_validate, fit, read_records)
from evaluators.predictor_features import FEATURE_NAMES, V1_FEATURE_NAMES  # noqa: E402

DATASET = Path("evaluators/predictors/h200-profile.jsonl")
OUT = Path("results/benchmarks/predictor-cv.json")
TREES = dict(n_estimators=300, max_depth=3, learning_rate=0.05)
EXTRAPOLATION_SPLIT = 384  # fit on resolutions up to this, test above it
NESTED_DEPTHS = (2, 3, 4)


# ------------------------------------------------------------------------------------------ models
class V1Model:
    """Predictor version 1: log y = ridge(standardised log counts) + trees(V1 features) on its residual."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int) -> None:
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import Ridge

        self.cols = [FEATURE_NAMES.index(n) for n in V1_FEATURE_NAMES]
        lin = _linear_columns(X)
        self.mean, self.scale = lin.mean(axis=0), lin.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        self.ridge = Ridge(alpha=1e-3).fit((lin - self.mean) / self.scale, np.log(y))
        resid = np.log(y) - self.ridge.predict((lin - self.mean) / self.scale)
        gbr = GradientBoostingRegressor(subsample=0.8, random_state=seed, **TREES).fit(X[:, self.cols], resid)
        self.init, self.trees = float(gbr.init_.constant_.ravel()[0]), [_tree_arrays(e) for e in gbr.estimators_[:, 0]]

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        base = self.ridge.predict((_linear_columns(X) - self.mean) / self.scale)
        trees = sum((_tree_predict(t, X[:, self.cols]) for t in self.trees), np.zeros(len(X)))
        return base + self.init + TREES["learning_rate"] * trees


def v1_fitter(X: np.ndarray, y: np.ndarray, target: str, batch_size: int, seed: int) -> V1Model:
    return V1Model(X, y, seed)


def v2_fitter(n_estimators: int = TREES["n_estimators"], max_depth: int = TREES["max_depth"]) -> Callable:
    def fitter(X: np.ndarray, y: np.ndarray, target: str, batch_size: int, seed: int) -> Any:
        return _fit_target(X, y, target=target, batch_size=batch_size, seed=seed, n_estimators=n_estimators,
                           max_depth=max_depth, learning_rate=TREES["learning_rate"])

    return fitter


def nested_fitter(X: np.ndarray, y: np.ndarray, target: str, batch_size: int, seed: int) -> Any:
    """v2 with its tree depth chosen by a 3-fold CV inside the training part (median error)."""
    from sklearn.model_selection import KFold

    errors = {}
    for depth in NESTED_DEPTHS:
        rel = []
        for train, test in KFold(n_splits=3, shuffle=True, random_state=seed).split(X):
            m = v2_fitter(max_depth=depth)(X[train], y[train], target, batch_size, seed)
            rel.extend(np.abs(np.exp(m.predict_log(X[test])) / y[test] - 1))
        errors[depth] = float(np.median(rel))
    best = min(errors, key=errors.get)
    nested_fitter.chosen.append(best)  # type: ignore[attr-defined]
    return v2_fitter(max_depth=best)(X, y, target, batch_size, seed)


nested_fitter.chosen = []  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ reports
def worst(records: list[dict], target: str, cv: dict[str, Any], n: int = 8) -> list[dict[str, Any]]:
    """The ``n`` configs with the largest mean |error| over the repeats, with what sets them apart."""
    from search_spaces import FasterViTConfig

    pred = np.asarray(cv["predictions"]).mean(axis=0)
    measured = np.asarray([records[i][target] for i in cv["rows"]], dtype=np.float64)
    out = []
    for j in np.argsort(-np.abs(pred / measured - 1))[:n]:
        r = records[cv["rows"][j]]
        cfg = FasterViTConfig.from_dict(r["config"])
        unfused = [g.index for g in cfg.stages if g.transformer and (g.width // cfg.num_heads[g.index]) % 8]
        out.append(dict(model=r.get("model"), measured=r[target], predicted=round(float(pred[j]), 4),
                        error=round(float(pred[j] / measured[j] - 1), 4), unfused_attention_stages=unfused,
                        layer_scale=cfg.layer_scale, throttle=r.get("throttle_reasons"),
                        sm_clock_mhz=r.get("sm_clock_mhz")))
    return out


def summary(cv: dict[str, Any]) -> dict[str, Any]:
    return {k: cv[k] for k in ("n", "within_10pct", "within_5pct", "spearman", "median_rel_err")}


def noise_floor(records: list[dict]) -> dict[str, Any]:
    """What one record's repeats and the GPU's state say about the measurement's own error."""
    cv = np.asarray([r["cv"] for r in records if r.get("cv") is not None])
    spread = np.asarray([(r["images_per_s_max"] - r["images_per_s_min"]) / r["images_per_s"] for r in records
                         if r.get("images_per_s_max") and r.get("images_per_s_min")])
    clocks = np.asarray([r["sm_clock_mhz"] / r["max_sm_clock_mhz"] for r in records
                         if r.get("sm_clock_mhz") and r.get("max_sm_clock_mhz")])
    throttled = [r for r in records if r.get("throttle_reasons")]
    return dict(repeat_cv_median=round(float(np.median(cv)), 5), repeat_cv_p95=round(float(np.percentile(cv, 95)), 5),
                repeat_spread_median=round(float(np.median(spread)), 5),
                repeat_spread_max=round(float(spread.max()), 5),
                throttled_records=len(throttled), throttle_reasons=sorted({t for r in throttled for t in r["throttle_reasons"]}),
                sm_clock_fraction_min=round(float(clocks.min()), 4), sm_clock_fraction_median=round(float(np.median(clocks)), 4),
                note="within-run spread only: each config was measured in one run, so run-to-run variation "
                     "(clocks, cuDNN's benchmark-mode algorithm choice) is not in these numbers")


def extrapolation(records: list[dict], fitters: dict[str, Callable], seed: int) -> dict[str, Any]:
    """Fit on resolutions <= ``EXTRAPOLATION_SPLIT``, predict the larger ones (one split, per model)."""
    from scipy.stats import spearmanr

    from evaluators.predictor import _features, relative_errors

    X = _features(r["config"] for r in records)
    side = np.asarray([max(r["resolution"]) for r in records])
    train, test = side <= EXTRAPOLATION_SPLIT, side > EXTRAPOLATION_SPLIT
    out: dict[str, Any] = dict(train_resolutions=[int(side[train].min()), int(side[train].max())],
                               test_resolutions=[int(side[test].min()), int(side[test].max())],
                               n_train=int(train.sum()), n_test=int(test.sum()))
    batch = int(records[0]["batch_size"])
    for name, fitter in fitters.items():
        for target in TARGETS:
            y = np.asarray([r[target] for r in records], dtype=np.float64)
            m = fitter(X[train], y[train], target, batch, seed)
            pred = np.exp(m.predict_log(X[test]))
            errors = relative_errors(pred, y[test])
            out.setdefault(name, {})[target] = dict(
                within_10pct=errors["within_10pct"], within_5pct=errors["within_5pct"],
                spearman=round(float(spearmanr(pred, y[test]).statistic), 4), median_rel_err=errors["median_rel_err"])
    return out


LABELS = {"v1": "version 1 (ridge on counts + trees)", "v2": "**current** (kernel-model base + ridge + trees)",
          "v2_no_trees": "current, base + ridge only", "v2_nested_depth": "current, tree depth by nested CV"}


def readme_sentences(result: dict[str, Any]) -> list[str]:
    """Fragments of the README's text after the table, from a ``predictor-cv.json`` (tests check them)."""
    e, n, one = result["extrapolation"], result["noise_floor"], result["single_split"]
    return [f"images/s is within ±10 % for {e['v2']['images_per_s']['within_10pct']:.0%} of the configs (Spearman "
            f"{e['v2']['images_per_s']['spearman']:.3f}; version 1: {e['v1']['images_per_s']['within_10pct']:.0%}, "
            f"{e['v1']['images_per_s']['spearman']:.3f})",
            f"({result['models']['v2_nested_depth']['images_per_s']['within_10pct']:.1%} within ±10 %)",
            f"within ±10 % for {one['images_per_s']['within_10pct']:.0%} of them (Spearman "
            f"{one['images_per_s']['spearman']:.3f}, median error {one['images_per_s']['median_rel_err']:.1%}) and "
            f"latency for {one['latency_b1_ms']['within_10pct']:.1%}",
            f"a median {n['repeat_spread_median']:.2%} (coefficient of variation {n['repeat_cv_median']:.3%}; "
            f"{n['throttled_records']} of the {result['n_records']} were power-capped, SM clock down to "
            f"{n['sm_clock_fraction_min']:.0%} of its maximum)"]


def markdown_rows(result: dict[str, Any]) -> list[str]:
    """The README's table rows (one per model) from a ``predictor-cv.json``."""
    rows = []
    for name, m in result["models"].items():
        ips, lat = m["images_per_s"], m["latency_b1_ms"]
        rows.append(f"| {LABELS[name]} | {ips['within_10pct']:.1%} | {ips['within_5pct']:.1%} | {ips['spearman']:.4f} | "
                    f"{ips['median_rel_err']:.2%} | {lat['within_10pct']:.1%} | {lat['within_5pct']:.1%} | "
                    f"{lat['spearman']:.4f} |")
    return rows


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


# ------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict[str, Any]:
    records, settings = check_records(read_records(args.dataset), mode=args.mode)
    fitters: dict[str, Callable] = {"v1": v1_fitter, "v2": v2_fitter(), "v2_no_trees": v2_fitter(n_estimators=0)}
    if args.nested:
        fitters["v2_nested_depth"] = nested_fitter
    out: dict[str, Any] = dict(
        dataset=str(args.dataset), gpu=settings["gpu_name"], mode=settings["mode"], dtype=settings["dtype"],
        batch_size=settings["batch_size"], n_records=len(records),
        protocol=dict(splitter="sklearn RepeatedKFold (shuffled)", folds=args.folds, repeats=args.repeats,
                      scikit_learn=_sklearn_version(),  # the trees' subsampling, hence the numbers, vary with it
                      seed=args.seed, trees=TREES, within_10pct="share of all folds x repeats predictions",
                      spearman="per repeat, then the mean", nested_depths=list(NESTED_DEPTHS) if args.nested else None),
        noise_floor=noise_floor(records), models={})
    for name, fitter in fitters.items():
        t0 = time.perf_counter()
        cv = cross_validate(records, folds=args.folds, repeats=args.repeats, seed=args.seed, fitter=fitter)
        entry: dict[str, Any] = {}
        for target, res in cv.items():
            entry[target] = dict(summary(res), worst=worst(records, target, res))
            print(f"{name:16s} {target:14s} within ±10% {res['within_10pct']:.1%}  ±5% {res['within_5pct']:.1%}  "
                  f"Spearman {res['spearman']:.4f}  median error {res['median_rel_err']:.2%}", flush=True)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        if name == "v2_nested_depth":
            entry["chosen_depths"] = {str(d): nested_fitter.chosen.count(d) for d in NESTED_DEPTHS}
        out["models"][name] = entry
    out["extrapolation"] = extrapolation(records, {"v1": v1_fitter, "v2": v2_fitter()}, args.seed)
    out["single_split"] = dict(held_out=0.2, seed=args.seed, command="nas predictor fit DATASET",
                               **fit(records, name="cv", held_out=0.2, seed=args.seed).meta["held_out"])
    for name in ("v1", "v2"):
        e = out["extrapolation"][name]["images_per_s"]
        print(f"extrapolation {name}: images/s at >{EXTRAPOLATION_SPLIT} px within ±10% {e['within_10pct']:.1%}, "
              f"Spearman {e['spearman']:.4f}", flush=True)
    return out


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=DATASET, help="JSON-lines dataset (bench/profile_dataset.py).")
    p.add_argument("--out", type=Path, default=OUT, help="JSON to write.")
    p.add_argument("--mode", default="cudagraph", help="profiler mode of the records to use (the file holds the search's quick mode, cudagraph, and best)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nested", action="store_true", help="Also choose the tree depth by nested CV (slow).")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    out = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
