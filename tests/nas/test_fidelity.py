"""nas.fidelity's pure parts: rung budgets, non-dominated fronts, promotion order and decisions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.estimators import build_estimator
from nas.fidelity import decide, dominates, eval_every, nondominated_fronts, rank_order, rung_steps, rungs
from nas.settings import EstimatorOptions, SearchSettings

MAX2 = (True, True)


def test_rungs_are_geometric_up_to_the_budget():
    assert rungs(1.0, 3, 27.0) == [1.0, 3.0, 9.0, 27.0]
    assert rungs(1.0, 2, 5.0) == [1.0, 2.0, 4.0, 5.0]  # the budget itself is the last rung
    assert rungs(0.5, 2, 2.0) == [0.5, 1.0, 2.0]
    assert rungs(None, 3, 9.0) == [1.0, 3.0, 9.0]  # default first rung: budget / eta^2


@pytest.mark.parametrize("min_budget, eta, match", [
    (1.0, 1, "--eta=1 must be an integer >= 2"), (1.0, 2.5, "--eta=2.5 must be an integer >= 2"),
    (1.0, True, "--eta=True"), (0.0, 2, "--min-budget=0.0 must be > 0"),
    (5.0, 2, "--min-budget 5 must be smaller than the train budget"),
    (4.0, 2, "--min-budget 4 must be smaller than the train budget")])
def test_bad_rungs_are_refused(min_budget, eta, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        rungs(min_budget, eta, 4.0)


def test_fidelity_settings_refuse_a_zero_cost_proxy_and_missing_accuracy():
    sh = dict(fidelity="sh", min_budget=1.0, eta=2, train_epochs=4.0, proxy_resolution=64, proxy_batch_size=8)
    with pytest.raises(ValueError, match="--fidelity sh needs --proxy train: the zero-cost proxy 'grad_norm'"):
        build_estimator(EstimatorOptions(proxy="grad_norm", **sh))
    with pytest.raises(ValueError, match="add 'accuracy' to the objectives"):
        SearchSettings(objectives=("params", "throughput"), proxy="train", **sh)
    with pytest.raises(ValueError, match="--fidelity 'half' must be one of full, sh"):
        EstimatorOptions(fidelity="half")
    with pytest.raises(ValueError, match="--eta=0 must be an integer >= 2"):  # checked even where unused
        EstimatorOptions(eta=0)
    assert build_estimator(EstimatorOptions(proxy="train", **sh)).rung_epochs == [1.0, 2.0, 4.0]


def test_rung_steps_and_validation_interval():
    assert rung_steps([1.0, 2.0, 4.0], 3) == [3, 6, 12]
    assert eval_every([3, 6, 12]) == 3
    assert eval_every([2, 4, 5]) == 1
    with pytest.raises(ValueError, match="same optimizer step"):
        rung_steps([0.1, 0.2, 0.4], 2)
    with pytest.raises(ValueError, match="0 steps per epoch"):
        rung_steps([1.0, 2.0], 0)


def test_fronts_and_order():
    # (accuracy, throughput), both maximised
    pts = {0: (50.0, 100.0), 1: (60.0, 50.0), 2: (40.0, 40.0), 3: (50.0, 100.0), 4: (70.0, 10.0)}
    fronts = nondominated_fronts(list(pts.values()), MAX2)
    assert fronts == [0, 0, 1, 0, 0]  # 2 is dominated by 0 (and 1, 3); equal points do not dominate each other
    # inside front 0: accuracy first, then throughput, then the earlier trial; the dominated one last
    assert rank_order(pts, MAX2) == [4, 1, 0, 3, 2]
    # a minimised second objective (params) flips its tie-break
    assert rank_order({0: (50.0, 9.0), 1: (50.0, 3.0)}, (True, False)) == [1, 0]
    assert dominates((1, 1), (1, 0), MAX2) and not dominates((1, 1), (1, 1), MAX2)


def test_decide_keeps_the_top_ceil_n_over_eta():
    pts = {0: (50.0, 100.0), 1: (60.0, 50.0), 2: (40.0, 40.0), 3: (50.0, 100.0), 4: (70.0, 10.0)}
    keep = [n for n in pts if decide(n, pts, MAX2, 2).promote]
    assert sorted(keep) == [0, 1, 4]  # ceil(5 / 2) = 3: the first three of [4, 1, 0, 3, 2]
    d = decide(2, pts, MAX2, 2)
    assert (d.promote, d.position, d.peers, d.keep, d.front) == (False, 4, 5, 3, 1)
    assert decide(7, {7: (1.0, 1.0)}, MAX2, 3).promote  # the first trial at a rung goes on
    with pytest.raises(ValueError, match="not among the peers"):
        decide(9, pts, MAX2, 2)


points = st.dictionaries(st.integers(0, 50), st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(points, st.integers(2, 4))
def test_promotion_properties(pts, eta):
    order = rank_order(pts, MAX2)
    promoted = {n for n in pts if decide(n, pts, MAX2, eta).promote}
    assert len(promoted) == math.ceil(len(pts) / eta)  # exactly the top 1/eta (rounded up)
    assert promoted == set(order[:len(promoted)])
    for a in pts:  # a trial dominated by another is never ranked above it
        for b in pts:
            if dominates(pts[a], pts[b], MAX2):
                assert order.index(a) < order.index(b)


def test_rung_peers_leave_out_failed_trials_and_cache_hits():
    """A trial whose worker died (FAIL) frees its place at the rung; a cache hit is not a second measurement."""
    import optuna

    from nas.fidelity import rung_peers

    study = optuna.create_study(directions=["maximize", "maximize"])
    entry = lambda acc: [dict(rung=0, epochs=1.0, step=1, accuracy=acc, values=[acc, 1.0])]  # noqa: E731
    for i, (attrs, state) in enumerate([({}, "COMPLETE"), ({}, "FAIL"), ({"cache_hit": 0}, "COMPLETE"),
                                        ({}, "RUNNING"), ({}, "PRUNED")]):
        t = study.ask()
        t.set_user_attr("rungs", entry(10.0 * i))
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        if state != "RUNNING":
            study.tell(t, [1.0, 1.0] if state == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, state))
    peers = rung_peers(study.get_trials(deepcopy=False), 1.0, exclude=4)
    assert peers == {0: [0.0, 1.0], 3: [30.0, 1.0]}
    assert rung_peers(study.get_trials(deepcopy=False), 2.0, exclude=4) == {}  # another rung


def test_within_noise_compares_front_neighbours():
    from nas.confirm import within_noise

    # bound 1.96 x sqrt(2) x 1.0 = 2.77 points: 10.5 vs 13.0 is within it, 13.0 vs 20.0 is not
    assert within_noise([10.0, 10.5, 13.0, 20.0], 1.0) == [True, True, True, False]
    assert within_noise([10.0, 12.0, 20.0], 0.5) == [False, False, False]
    # a cache hit repeating its source is no neighbour: the next other architecture is compared
    assert within_noise([10.0, 10.0, 20.0], 1.0, sources=[3, 3, 7]) == [False, False, False]
    assert within_noise([10.0, 10.0, 11.0], 1.0, sources=[3, 3, 7]) == [True, True, True]
    assert within_noise([10.0, 10.5], None) == [False, False]
    assert within_noise([5.0], 3.0) == [False]
