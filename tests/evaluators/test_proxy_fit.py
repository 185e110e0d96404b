"""Rank statistics and cross-validated proxy combinations (evaluators.proxy_fit)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.proxy_fit import (
    DEFAULT_ALPHAS, METHODS, _fit_ridge, _predict_ridge, _tau, cv_fit, cv_fit_all, kendall_ci,
)


def _table(x: np.ndarray, names: list[str]) -> list[dict[str, float]]:
    return [dict(zip(names, map(float, row))) for row in x]


# ------------------------------------------------------------------------------ kendall_ci
def test_kendall_ci_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = x + rng.normal(size=80)
    a = kendall_ci(x, y, seed=3)
    lo, hi = a["tau_ci95"]
    assert a["n"] == 80 and lo < a["kendall_tau"] < hi and 0.2 < a["kendall_tau"] < 0.8
    assert -1 <= a["spearman_rho"] <= 1 and a["spearman_rho"] > a["kendall_tau"]  # rho > tau for such data
    assert kendall_ci(x, y, seed=3) == a and kendall_ci(x, y, seed=4)["tau_ci95"] != a["tau_ci95"]
    assert kendall_ci([1, 2, 3, 4], [1, 2, 3, 4])["kendall_tau"] == pytest.approx(1.0)


def test_kendall_ci_errors_and_undefined_cases():
    with pytest.raises(ValueError, match="x has 3 values, y has 2"):
        kendall_ci([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3 pairs"):
        kendall_ci([1, 2], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        kendall_ci([1, 2, float("nan")], [1, 2, 3])
    const = kendall_ci([1, 1, 1, 1], [1, 2, 3, 4])
    assert const["kendall_tau"] is None and const["tau_ci95"] is None


# ------------------------------------------------------------------------------ cv_fit
def test_cross_validation_never_scores_a_row_on_a_model_that_saw_it():
    # pure-noise target, as many noise features as rows: a fit scored on its own rows memorises
    # the noise (tau ~ 1); out-of-fold predictions must be about as good as chance
    rng = np.random.default_rng(1)
    n, p = 60, 60
    x, y = rng.normal(size=(n, p)), rng.normal(size=n)
    leaky = _fit_ridge(x, y, alphas=(1e-6,), inner_folds=2, seed=0)
    assert _tau(_predict_ridge(leaky, x), y) > 0.9
    names = [f"f{j}" for j in range(p)]
    fit = cv_fit(_table(x, names), list(y), names, method="ridge", alphas=(1e-6,), folds=5, seed=0, boot=200)
    assert abs(fit.kendall_tau) < 0.25
    ens = cv_fit(_table(x, names), list(y), names, method="rank_ensemble", folds=5, seed=0, boot=200)
    assert ens.fold_models[0]["train_tau"] > 0.3 and abs(ens.kendall_tau) < 0.25  # fits its folds, not the others
    assert sorted(set(fit.fold_of)) == list(range(5))


def test_cv_fit_recovers_a_real_signal_and_reports_its_members():
    rng = np.random.default_rng(2)
    n = 80
    good = rng.normal(size=n)
    anti = -good + 0.5 * rng.normal(size=n)  # informative with the wrong sign
    noise = rng.normal(size=n)
    y = good + 0.3 * rng.normal(size=n)
    table = _table(np.column_stack([good, anti, noise]), ["good", "anti", "noise"])
    fits = cv_fit_all(table, list(y), ["good", "anti", "noise"], folds=5, seed=0, boot=300)
    assert set(fits) == set(METHODS)
    for f in fits.values():
        assert f.kendall_tau > 0.6 and f.tau_ci95[0] < f.kendall_tau < f.tau_ci95[1]
        assert f.spearman_rho > f.kendall_tau and f.n == n and not f.dropped
        assert all(p is not None for p in f.predictions)
    ens = fits["rank_ensemble"].final
    assert ens["members"][0] == "good" and ens["signs"][0] == 1.0
    assert "anti" not in ens["members"] or ens["signs"][ens["members"].index("anti")] == -1.0
    ridge = fits["ridge"].final
    assert ridge["alpha"] in DEFAULT_ALPHAS and ridge["weights"]["good"] > abs(ridge["weights"]["noise"])
    assert fits["ridge"].to_dict()["method"] == "ridge"


def test_cv_fit_drops_incomplete_rows_and_is_deterministic():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 2))
    y = list(x[:, 0] + 0.1 * rng.normal(size=30))
    table = _table(x, ["a", "b"])
    table[4]["a"] = None
    table[7] = {"a": {"value": float(x[7, 0])}, "b": float("nan")}
    y[9] = None
    fit = cv_fit(table, y, ["a", "b"], folds=3, seed=0, boot=100)
    assert fit.dropped == [4, 7, 9] and fit.n == 27
    assert fit.predictions[4] is None and fit.predictions[0] is not None
    assert cv_fit(table, y, ["a", "b"], folds=3, seed=0, boot=100) == fit


def test_cv_fit_errors_are_clear():
    table = _table(np.arange(20.0).reshape(10, 2), ["a", "b"])
    y = list(range(10))
    with pytest.raises(ValueError, match="10 rows, the target 9"):
        cv_fit(table, y[:9], ["a"])
    with pytest.raises(ValueError, match="at least 12 complete rows for 6 folds, got 10"):
        cv_fit(table, y, ["a"], folds=6)
    with pytest.raises(ValueError, match=r"features \['c'\] are in no row"):
        cv_fit(table, y, ["a", "c"], folds=2)
    with pytest.raises(ValueError, match="unknown method 'gbm'"):
        cv_fit(table, y, ["a"], method="gbm")
    with pytest.raises(ValueError, match="folds=1"):
        cv_fit(table, y, ["a"], folds=1)
    with pytest.raises(ValueError, match="at least one feature"):
        cv_fit(table, y, [], folds=2)
