"""Multi-objective successive halving for the ``train`` proxy (``nas search --fidelity sh``).

Optuna cannot prune multi-objective studies (``Trial.report`` raises for them, optuna/optuna#3450)
and Ray's ASHA takes one metric, so the rung logic lives here, as in MO-ASHA (Schmucker et al.
2021, "Multi-objective multi-fidelity hyperparameter optimization with application to fairness";
syne-tune's ``MOASHA``): a trial trains towards the full budget and meets *rungs* at
``B, E*B, E^2*B, ...`` epochs (below the budget). At each rung it records its objective vector
(accuracy at that rung; throughput, params... as measured before training) and is ranked among
every trial of the study that reached the same rung:

1. non-dominated sorting of the vectors (front 0 = not dominated by any peer, front 1 = dominated
   only by front 0, ...);
2. tie-break inside a front: the objectives in the order given (accuracy first: the value the
   budget improves), each in its own direction, then the trial number (the earlier trial first, so
   a decision replayed from the record gives the same answer).

The trial goes on when its position is among the first ``ceil(n / E)`` of the ``n`` peers (the first
trial at a rung always goes on), else it ends PRUNED with its rung and rung accuracy recorded.

Like syne-tune's MOASHA this is the *asynchronous, stopping* variant: the decision is taken by the
trial itself when it reaches the rung, against the peers recorded so far, so no trial ever waits
for a rung to fill, and a trial's continuation is decided once, by its owner, and written into its
own record before it trains on (two workers can never promote the same trial; there is no pool of
promotion slots to double-book). A promoted trial simply trains on in the same process with its
weights, optimizer state and learning-rate schedule (one cosine schedule over the full budget),
so nothing is reloaded and nothing is lost. A trial whose worker died is FAIL and is not a peer
(its place at the rung is freed). Trials served from the architecture cache are not peers either
(they would count one measurement twice).

The rung budgets are the training estimator's (``evaluators.estimators.Halving``: ``rungs``,
``rung_steps``, ``eval_every``, re-exported here); what needs the study lives here. Pure functions
(``nondominated_fronts``, ``rank_order``, ``decide``) are tested directly; ``RungController`` is the
per-trial hook the search passes to the estimator as its ``report(step, accuracy) -> stop``, and
``rung_peers`` reads the peers from the study storage.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from evaluators.estimators import Rung, eval_every, rung_steps, rungs

from . import record as R

__all__ = ["rungs", "rung_steps", "eval_every", "dominates", "nondominated_fronts", "rank_order", "Decision",
           "decide", "rung_peers", "RungController"]

_EPS = 1e-9


# ------------------------------------------------------------------------------------------ ranking
def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return (all(x == y or _better(x, y, m) for x, y, m in zip(a, b, maximize))
            and any(_better(x, y, m) for x, y, m in zip(a, b, maximize)))


def nondominated_fronts(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Front index of each point (0: dominated by none; k: dominated only by fronts < k)."""
    left = set(range(len(points)))
    front = [0] * len(points)
    k = 0
    while left:
        top = {i for i in left if not any(dominates(points[j], points[i], maximize) for j in left if j != i)}
        for i in top:
            front[i] = k
        left -= top
        k += 1
    return front


def rank_order(peers: Mapping[int, Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Trial numbers best first: by front, then each objective in order (own direction), then number."""
    numbers = sorted(peers)
    fronts = dict(zip(numbers, nondominated_fronts([peers[n] for n in numbers], maximize)))

    def key(n: int) -> tuple:
        return (fronts[n], *[-v if m else v for v, m in zip(peers[n], maximize)], n)

    return sorted(numbers, key=key)


@dataclass(frozen=True)
class Decision:
    """One trial's decision at one rung (recorded in its ``rungs`` user attribute)."""

    promote: bool
    position: int  # 0-based place in rank_order among the peers
    peers: int     # trials ranked at this rung (this one included)
    keep: int      # how many go on: ceil(peers / eta)
    front: int     # its non-dominated front among the peers


def decide(number: int, peers: Mapping[int, Sequence[float]], maximize: Sequence[bool], eta: int) -> Decision:
    """Whether trial ``number`` (one of ``peers``) is among the top ``ceil(n / eta)`` at its rung."""
    if number not in peers:
        raise ValueError(f"trial {number} is not among the peers {sorted(peers)}")
    order = rank_order(peers, maximize)
    numbers = sorted(peers)
    fronts = dict(zip(numbers, nondominated_fronts([peers[n] for n in numbers], maximize)))
    keep = math.ceil(len(peers) / eta)
    pos = order.index(number)
    return Decision(promote=pos < keep, position=pos, peers=len(peers), keep=keep, front=fronts[number])


# ------------------------------------------------------------------------------------------ the study side
def rung_peers(trials: Sequence[Any], epochs: float, *, exclude: int) -> dict[int, list[float]]:
    """Objective vectors recorded at the rung of ``epochs`` by other trials (FAIL and cache hits left out)."""
    out: dict[int, list[float]] = {}
    for t in trials:
        if t.number == exclude or t.state.name == "FAIL" or t.user_attrs.get(R.CACHE_HIT) is not None:
            continue
        for entry in t.user_attrs.get(R.RUNGS) or ():
            if abs(entry["epochs"] - epochs) <= _EPS * max(1.0, epochs):
                out[t.number] = list(entry["values"])
    return out


class RungController:
    """The per-trial hook: at each rung step, record the rung, rank against the peers, say whether to stop.

    ``__call__(step, accuracy, measured) -> stop`` is called after each validation of the estimate;
    True (after recording why in the trial and in ``reason``) stops it, and the search ends the
    trial PRUNED. ``objectives``: the study's objectives (``nas.objectives.Objective``); ``study``:
    read for the peers; ``rungs``: the estimator's; ``record``: writes a user attribute of this trial.
    """

    def __init__(self, *, study: Any, number: int, objectives: Sequence[Any], rungs: Sequence[Rung], eta: int,
                 record: Callable[[str, Any], None]):
        self.study, self.number, self.objectives = study, number, list(objectives)
        self.rungs, self.eta, self.record = list(rungs), eta, record
        self.maximize = [o.maximize for o in self.objectives]
        self.entries: list[dict[str, Any]] = []
        self.reason: Optional[str] = None

    def __call__(self, step: int, accuracy: float, measured: Mapping[str, Any]) -> bool:
        steps = [r.step for r in self.rungs]
        if step not in steps[:-1]:  # between rungs, or the full budget (the trial completes)
            return False
        k = steps.index(step)
        epochs = self.rungs[k].epochs
        vector = [float(o.extract({**measured, "accuracy": accuracy})) for o in self.objectives]
        entry: dict[str, Any] = dict(rung=k, epochs=epochs, step=step, accuracy=accuracy, values=vector)
        self.entries.append(entry)
        self.record(R.RUNGS, self.entries)  # visible to the peers before this trial decides
        self.record(R.RUNG, k)
        self.record(R.RUNG_EPOCHS, epochs)
        self.record(R.RUNG_ACCURACY, accuracy)
        peers = rung_peers(self.study.get_trials(deepcopy=False), epochs, exclude=self.number)
        peers[self.number] = vector
        d = decide(self.number, peers, self.maximize, self.eta)
        entry.update(asdict(d), decision="continue" if d.promote else "stop")
        self.record(R.RUNGS, self.entries)
        if d.promote:
            return False
        self.reason = (f"stopped at rung {k} ({epochs:g} epochs, accuracy {accuracy:.2f}): position {d.position + 1} "
                       f"of {d.peers} at this rung (front {d.front}); the top {d.keep} go on (eta {self.eta})")
        self.record(R.STATUS, R.Status.PRUNED)
        self.record(R.ERROR, self.reason)
        return True
