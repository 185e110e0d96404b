"""Confirmation of a study's front by training (``nas confirm --study S --top K``, ``nas search --confirm K``).

A front found on one training seed may owe some of its order to that seed, and a front found on
a supernet's inherited weights to the weight sharing. ``confirm_front`` measures the K most
accurate front points (one per architecture; cache hits fold into their source) again the way the
study's estimator says (``AccuracyEstimator.confirmation``): a training estimator re-trains each at
its full budget with another seed (``kind: retrain``); a supernet study trains each stand-alone
with the supernet's recipe, data and budget under two seeds (``kind: standalone``). Per trial the
search value and every new value go into the study attribute ``confirmations`` (``nas.record``):
``{"<trial>": [{"kind", "seed", "accuracy", "search_accuracy", "epochs", "seconds", "status"}, ...]}``.
``seed_noise`` turns the samples of one recipe into the measured seed-to-seed spread that
``within_noise`` compares front neighbours against.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Mapping, Optional, Sequence

from evaluators.checks import check_int
from search_spaces import FasterViTConfig

from . import record as R
from .estimators import build_estimator, estimator_type
from .front import objective_names, pareto_trials
from .settings import EstimatorOptions, cuda_available

__all__ = ["confirm_front", "front_to_confirm", "seed_noise", "seed_differences", "within_noise", "confirmations",
           "noise_marks",
           "DIFFERENCE_BOUND_SDS"]


def confirmations(study: Any) -> dict[str, list[dict[str, Any]]]:
    """The recorded re-trains of ``study``: str(trial number) -> entries (empty when none)."""
    return dict(study.user_attrs.get(R.STUDY_CONFIRMATIONS) or {})


def front_to_confirm(study: Any, top: int) -> list[Any]:
    """The ``top`` front trials of highest accuracy, one per architecture (a cache hit's source stands for it)."""
    names = objective_names(study)
    if "accuracy" not in names:
        raise ValueError(f"study {study.study_name!r} has no accuracy objective ({', '.join(names)}): "
                         f"nothing to re-train")
    check_int("--top", top, minimum=1)
    i = names.index("accuracy")
    seen, out = set(), []
    for t in sorted(pareto_trials(study), key=lambda t: (-t.values[i], t.number)):
        number = t.user_attrs.get(R.CACHE_HIT, t.number)
        if number in seen:
            continue
        seen.add(number)
        out.append(t if number == t.number else study.trials[number])
    if not out:
        raise ValueError(f"study {study.study_name!r} has no complete trial on its front yet: nothing to re-train")
    return out[:top]


def _study_settings(study: Any) -> dict[str, Any]:
    """The study's stored settings; refused unless its accuracy estimator can be confirmed by training."""
    s = dict(study.user_attrs.get(R.STUDY_SETTINGS) or {})
    proxy = study.user_attrs.get(R.STUDY_PROXY)
    if not proxy or not estimator_type(proxy).confirmable:
        raise ValueError(f"study {study.study_name!r} was searched with --proxy {proxy}: training confirms the "
                         f"accuracies of an estimator that trains (--proxy train) or of a supernet "
                         f"(--proxy supernet:DIR) only")
    return s


def confirm_front(study: Any, *, top: int, seed: Optional[int] = None, device: Optional[str] = None,
                  out: Callable[[str], None] = lambda line: None,
                  trials: Optional[Sequence[Any]] = None) -> list[dict[str, Any]]:
    """Re-train the ``top`` front points with another seed at the full budget; record and return the rows.

    ``seed``: the re-training seed (default: the study's seed + 1 + the re-trains the trial already
    has, so repeated confirmations add new seeds). ``trials``: re-train these COMPLETE trials of the
    study instead of ``front_to_confirm(study, top)`` (e.g. one front point per unit of a resumable
    benchmark). One line per re-train goes to ``out``.
    """
    s = _study_settings(study)
    if trials is None:
        trials = front_to_confirm(study, top)
    else:
        bad = [t.number for t in trials if t.state.name != "COMPLETE" or not t.values]
        if bad:
            raise ValueError(f"trials {bad} of study {study.study_name!r} are not complete: nothing to re-train")
    i = objective_names(study).index("accuracy")
    dev = device or s.get("device") or ("cuda" if cuda_available() else "cpu")
    # the study's estimator (no rungs), and how it says its values are confirmed
    options = EstimatorOptions.from_mapping({**s, "proxy": study.user_attrs.get(R.STUDY_PROXY), "fidelity": "full"})
    conf = build_estimator(options).confirmation()
    if conf is None:
        raise ValueError(f"study {study.study_name!r}: its accuracy estimator cannot be confirmed by training")
    conf.estimator.prepare(device=dev, seed=int(s.get("seed", 0)))
    done = confirmations(study)
    rows = []
    jobs = [(t, k) for t in trials for k in range(conf.seeds)]
    for n, (t, k) in enumerate(jobs):
        key = str(t.number)
        entries = list(done.get(key, []))
        same = [e for e in entries if e.get("kind", "retrain") == conf.kind]
        use = seed + k if seed is not None else int(s.get("seed", 0)) + 1 + len(same)
        res = conf.estimator.estimate(FasterViTConfig.from_dict(t.user_attrs[R.CONFIG]), seed=use)
        entry = dict(kind=conf.kind, seed=use, accuracy=None if res.failure else float(res.value),
                     search_accuracy=float(t.values[i]), search_seed=int(s.get("seed", 0)), epochs=res.epochs,
                     seconds=round(res.seconds, 3), status=res.status)
        entries.append(entry)
        done[key] = entries
        study.set_user_attr(R.STUDY_CONFIRMATIONS, done)  # after each one: an interruption keeps the others
        rows.append(dict(trial=t.number, **entry))
        acc = "NaN" if entry["accuracy"] is None else f"{entry['accuracy']:.2f}"
        what = "re-trained" if conf.paired_with_search else "trained stand-alone"
        out(f"[{n + 1}/{len(jobs)}] trial #{t.number}: search accuracy {entry['search_accuracy']:.2f} "
            f"(seed {entry['search_seed']}), {what} {acc} (seed {use}, {res.epochs or 0:g} epochs, "
            f"{res.seconds:.1f}s)")
    return rows


def seed_differences(entries: Sequence[Mapping[str, Any]]) -> list[float]:
    """Differences of two independent seed draws of one recipe among one trial's confirmation entries:
    (re-trained - search) of each re-train, and consecutive pairs of stand-alone trainings."""
    ok = [e for e in entries if e.get("accuracy") is not None]
    diffs = [e["accuracy"] - e["search_accuracy"] for e in ok if e.get("kind", "retrain") == "retrain"]
    alone = [e["accuracy"] for e in ok if e.get("kind") == "standalone"]
    return diffs + [b - a for a, b in zip(alone[::2], alone[1::2])]


def seed_noise(study: Any) -> Optional[float]:
    """The measured seed noise: the standard deviation of the differences of two seed draws / sqrt(2).

    Each difference is of two independent seed draws (``seed_differences``), hence the sqrt(2);
    with one difference its absolute value / sqrt(2) is used. None when nothing was confirmed.
    """
    diffs = [d for entries in confirmations(study).values() for d in seed_differences(entries)]
    if not diffs:
        return None
    spread = abs(diffs[0]) if len(diffs) == 1 else statistics.stdev(diffs)
    return spread / math.sqrt(2)


#: two single-seed accuracies differ by more than this many seed sds with probability 5 % when the
#: architectures are equally good: 1.96 x sqrt(2) (a difference of two independent seed draws)
DIFFERENCE_BOUND_SDS = 1.96 * math.sqrt(2)


def within_noise(accuracies: Sequence[float], noise: Optional[float],
                 sources: Optional[Sequence[Any]] = None) -> list[bool]:
    """Per point of a front sorted along it: True when its accuracy is within the 95 % bound of a
    difference of two seeds (``DIFFERENCE_BOUND_SDS`` x ``noise``) of its nearest neighbour on each side.

    ``sources``: the architecture each point is (a cache hit repeats its source); a neighbour that is
    the same architecture is skipped, since identical values say nothing about noise.
    """
    if noise is None:
        return [False] * len(accuracies)
    src = list(sources) if sources is not None else list(range(len(accuracies)))
    bound = DIFFERENCE_BOUND_SDS * noise
    out = []
    for k, a in enumerate(accuracies):
        near = [_nearest_other(src, k, step) for step in (-1, 1)]
        out.append(any(abs(a - accuracies[j]) <= bound for j in near if j is not None))
    return out


def _nearest_other(sources: Sequence[Any], k: int, step: int) -> Optional[int]:
    """Index of the nearest point from ``k`` in direction ``step`` that is another architecture."""
    j = k + step
    while 0 <= j < len(sources) and sources[j] == sources[k]:
        j += step
    return j if 0 <= j < len(sources) else None


def noise_marks(study: Any) -> Optional[dict[str, Any]]:
    """The front read against the measured seed noise; None without confirmations or an accuracy objective.

    ``{"seed_noise": s, "points": [{"trial", "accuracy", "retrained": [..], "within_noise": bool}, ...]}``,
    points in front order (the first objective); ``within_noise``: its accuracy and a front
    neighbour's (another architecture) differ by less than the 95 % bound of two seeds
    (``DIFFERENCE_BOUND_SDS`` x ``s``), so the two are not shown to differ.
    """
    names = objective_names(study)
    noise = seed_noise(study)
    if noise is None or "accuracy" not in names:
        return None
    i = names.index("accuracy")
    done = confirmations(study)
    front = pareto_trials(study)
    acc = [t.values[i] for t in front]
    marks = within_noise(acc, noise, [t.user_attrs.get(R.CACHE_HIT, t.number) for t in front])
    points = [dict(trial=t.number, accuracy=a, within_noise=m,
                   retrained=[e["accuracy"] for e in done.get(str(t.user_attrs.get(R.CACHE_HIT, t.number)), [])])
              for t, a, m in zip(front, acc, marks)]
    return dict(seed_noise=noise, points=points)
