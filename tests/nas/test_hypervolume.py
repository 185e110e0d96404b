"""nas.hypervolume (exact, public-API-only) against Optuna's private WFG implementation."""

from __future__ import annotations

import numpy as np
import pytest

from nas.hypervolume import compute_hypervolume, dominates, non_dominated


@pytest.mark.parametrize("dim,n", [(2, 1), (2, 40), (3, 25), (4, 12)])
def test_matches_optunas_private_hypervolume(dim, n):
    from optuna._hypervolume import compute_hypervolume as optuna_hv  # the oracle only

    rng = np.random.default_rng(dim * 100 + n)
    for _ in range(5):
        pts = rng.random((n, dim))
        pts[: n // 3] = np.round(pts[: n // 3], 1)  # ties and duplicates
        ref = np.full(dim, 1.1)
        assert compute_hypervolume(pts, ref) == pytest.approx(float(optuna_hv(pts, ref)), rel=1e-9)


def test_known_values_and_points_outside_the_reference():
    assert compute_hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), [3.0, 3.0]) == pytest.approx(3.0)
    assert compute_hypervolume(np.array([[1.0, 1.0, 1.0]]), [2.0, 3.0, 4.0]) == pytest.approx(6.0)
    assert compute_hypervolume(np.array([[4.0, 0.0]]), [3.0, 3.0]) == 0.0  # worse than the reference: nothing
    assert compute_hypervolume(np.empty((0, 2)), [1.0, 1.0]) == 0.0


def test_dominance():
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2]) and not dominates([0, 3], [1, 2])
    assert non_dominated(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]])).tolist() == [[1.0, 2.0], [2.0, 1.0]]
