"""The headline run (issue #31): one-shot search on the supernet vs NSGA-II vs successive halving at equal GPU time.

Three methods search the same space for (stand-alone top-1 at budget E, measured throughput), each
seed k (``--seeds``, >= 2) a full replicate of all three:

- ``A``: train the supernet of the space at E (``evaluators.supernet.train_supernet``, recipe seed
  k, resumable), an NSGA-II study with ``--proxy supernet:DIR`` (inherited top-1 after BatchNorm
  recalibration; ``--a-search-seconds`` of search, population ``--a-population``), then the
  confirmation of its front by stand-alone training at E with two seeds (``nas.confirm``);
- ``B``: NSGA-II (population ``--b-population``) on stand-alone training at E (``--proxy train``);
- ``C``: multi-objective successive halving (``--fidelity sh``, random sampler as in MO-ASHA,
  rungs from ``--min-budget`` by ``--eta`` up to E).

Throughput is measured by the search's profiler (``nas search``'s defaults for the device: CUDA
graphs, batch 128, fp16) for every trial and preset.

One truth for all: every front is confirmed the same way, by stand-alone training at E with the
two seeds 1000 + 2k and 1001 + 2k (never a search seed), and a point's confirmed top-1 is the mean
of the two. The stand-alone recipe is the train proxy's (``TrainRecipe`` at ``--epochs``,
``--batch-size``, ``--subset``, ``--resolution``; lr 3.5e-4 sqrt-scaled, 20 % warm-up, label
smoothing 0.1, no clipping, no augmentation); the supernet is trained with that recipe, and a run
refuses to go on when the supernet's confirmation recipe and B's training recipe differ (naming the
fields). ``--train-recipe JSON|FILE`` (``nas search --train-recipe``; ground truth 2's summary file)
replaces those defaults for all three methods and the supernet alike (the rules, shared with
``bench/supernet.py``, are ``bench/bench_recipe.py``'s: a summary's recorded ``steps`` must be
``--epochs`` on the data, its step mode and evaluation cadence are dropped). Up to ``--confirm-top``
points of each front are confirmed, spread evenly along it by throughput (both ends kept), the same
rule for every method.

GPU-seconds, counted per method and seed (the summary gives the mean over seeds):

- A = the supernet's (every call's wall seconds, setup, checkpoints and its final evaluation
  included, x the processes) + the search's (the study clock below) + the confirmation trainings'.
- B and C: **their study is given A's total of the same seed as its time budget, and their front's
  confirmation is counted on top of it, as A's is.** So B and C search for as long as A spends in
  all, and then spend more on confirmation: any inequality favours the baselines. The rule is also
  written into the results JSON (``settings.budget_rule``).

The study clock: a study runs in calls of at most the time left (``--time-budget``); within a call
the clock runs from its first trial's start to the last trial's end, calls add up, and only trials
that COMPLETE within the study's budget count (the last trial may overrun; it is left out, as in
``bench/multifidelity.py``). Between calls the sampler is re-seeded (the first call with seed k),
so a resumed random or NSGA-II sampler does not draw its first architectures again.

Hypervolume: of (confirmed top-1, measured throughput) of each study's confirmed points, reference
point ``--reference`` (default 10 % top-1 = chance on 10 classes, 0 img/s), both maximised.
``hv_ratio_vs_best_baseline`` = mean over seeds of A / the larger of the means of B and C (seeds
with all three confirmed; target >= 1.3). Presets: FasterViT-0..3 trained at E with seeds 0 and 1
and profiled exactly as a trial of B (``multifidelity``'s preset units). Seed noise: the pooled
per-seed sd of top-1 from the confirmation pairs (each pair's squared difference / 2, one degree of
freedom) and the presets' seeds. A preset is dominated beyond noise on a seed when A's confirmed
points of that seed hold one with throughput >= the preset's and mean top-1 > the preset's mean
+ 2 x noise x sqrt(1/2 + 1/n_preset); ``presets_dominated_beyond_noise`` lists those dominated on a
majority of seeds. ``front``: the non-dominated confirmed points of A over all seeds (with their
supernet top-1).

Resumable: a unit is a supernet call, a study call, the confirmation of one front point (two
trainings) or one preset training; a unit starts only when its estimate fits what is left of
``--time-budget``; the results JSON is rewritten after each unit and the summary with it. Exit 75:
units are left, run the same command again. The JSON, ``<results-dir>/studies.db`` and the
supernet folders ``<results-dir>/supernet-seed<k>`` belong together (a supernet folder holds GBs of
weights and optimizer state on the default space: keep the GPU machine warm between calls, or the
supernet starts again). A resume with other settings is refused, naming the keys (``--seeds`` may
grow).

    python bench/oneshot.py --smoke --out-dir /tmp/os        # CPU, tiny space, 2 seeds (~1 min)
    PYTHONPATH=. python bench/oneshot.py --data-dir .data/fmnist --epochs 16 --time-budget 540
                                                             # GPU: repeat while it exits 75
    python bench/oneshot.py --analyze                        # summary and figure from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import multifidelity as mf  # noqa: E402
from bench_recipe import bench_recipe, check_budget, check_recipe, supernet_recipe  # noqa: E402
from multifidelity import ARCH, SOURCE, Unit, hypervolume, study_key  # noqa: E402

BENCH = "oneshot"
SCHEMA_VERSION = 1
METHODS = ("A", "B", "C")
PAUSED = 75  # exit status: units are left, run the same command again
RESULTS = ROOT / "results" / "benchmarks"
#: the summary's keys, read by automation (issue #31): exactly these
SUMMARY_KEYS = ("gpu", "dataset", "epochs", "seeds", "gpu_seconds", "hv", "hv_ratio_vs_best_baseline",
                "presets_dominated_beyond_noise", "front")
FRONT_KEYS = ("arch_id", "throughput", "top1_confirmed", "top1_supernet")
TARGET_RATIO = 1.3
CONFIRM_SEEDS = 2
OBJECTIVES = ("accuracy", "throughput")
#: settings that define the experiment; a resumed run must match them (seeds may grow)
EXPERIMENT_KEYS = ("data", "space", "epochs", "resolution", "batch_size", "subset", "val_subset", "sandwich_n",
                   "calib_images", "a_search_seconds", "a_population", "b_population", "min_budget", "eta",
                   "confirm_top", "trials_cap", "chunk_trials", "reference", "presets", "preset_seeds", "device",
                   "smoke", "train_recipe")
BUDGET_RULE = ("B and C: study time budget = A's total GPU-seconds of the same seed (supernet calls + search + "
               "confirmation); their confirmation (same rule as A's: stand-alone at E, two seeds) is counted on "
               "top, so gpu_seconds B and C >= A")
DEFAULT_OVERHEAD_S = 60.0  # a study call's setup before its first trial, until one is measured
DEFAULT_TRAINING_S = 120.0  # one stand-alone training at E, until one is measured
SUPERNET_MIN_CALL_S = 90.0  # a supernet call needs at least this much of the time budget (setup, steps, checkpoint)
CHUNKS = "chunks"  # results-file section: per study key, its calls


def _bad(msg: str) -> SystemExit:
    return SystemExit(f"error: {msg}")


def confirm_seeds(seed: int) -> tuple[int, int]:
    """The two stand-alone training seeds of seed k's confirmations (never a search or preset seed)."""
    return 1000 + 2 * seed, 1001 + 2 * seed


def sampler_seed(seed: int, call: int) -> int:
    """The sampler's seed in a study's ``call``-th call (the first: the study's seed)."""
    return seed + 1000 * call


# =============================================================================================
# settings
# =============================================================================================
def experiment(args: argparse.Namespace) -> dict[str, Any]:
    """The settings written into the results JSON (``EXPERIMENT_KEYS`` plus seeds, data folder, rules)."""
    from tests.spaces import tiny_space

    return dict(data=args.data, space=tiny_space() if args.smoke else args.space, epochs=args.epochs,
                resolution=args.resolution, batch_size=args.batch_size, subset=args.subset,
                val_subset=args.val_subset, sandwich_n=args.sandwich_n, calib_images=args.calib_images,
                a_search_seconds=args.a_search_seconds, a_population=args.a_population,
                b_population=args.b_population, min_budget=args.min_budget, eta=args.eta,
                confirm_top=args.confirm_top, trials_cap=args.trials_cap, chunk_trials=args.chunk_trials,
                reference=args.reference,
                presets=["tiny_b"] if args.smoke else list(mf.PRESET_NAMES),
                preset_seeds=list(mf.PRESET_SEEDS), device="cpu" if args.smoke else "cuda", smoke=bool(args.smoke),
                methods=list(METHODS), seeds=args.seeds, data_dir=args.data_dir, budget_rule=BUDGET_RULE,
                profiler="nas search's defaults for the device (CUDA: batch 128, fp16, cudagraph, 10 repeats)",
                train_recipe=bench_recipe(args.train_recipe),
                recipe=("evaluators.train.train_proxy defaults at epochs/batch_size/subset/resolution (supernet too)"
                        + ("" if args.train_recipe is None else ", with train_recipe's fields (supernet too)")))


def search_settings(exp: dict[str, Any], method: str, seed: int, *, storage: str, results_dir: str,
                    supernet_dir: Path) -> Any:
    """The ``SearchSettings`` of one study (validated: bad values are refused here, naming the setting)."""
    from nas.settings import SearchSettings

    common = dict(objectives=OBJECTIVES, space=exp["space"], data=exp["data"], data_dir=exp["data_dir"],
                  storage=storage, study=f"os-{method}-seed{seed}", device=exp["device"], seed=seed,
                  enqueue_presets=False, proxy_resolution=exp["resolution"], train_epochs=exp["epochs"],
                  train_subset=exp["subset"], train_val_subset=exp["val_subset"],
                  train_batch_size=exp["batch_size"], results_dir=results_dir, quiet=True,
                  measure_references=False,  # the bench trains FasterViT-0..3 itself, with two seeds
                  timeout=float(exp["a_search_seconds"]))
    trained = dict(train_recipe=json.dumps(exp["train_recipe"])) if exp.get("train_recipe") else {}
    method_part = {"A": dict(proxy=f"supernet:{supernet_dir}", sampler="nsga2", population=exp["a_population"]),
                   "B": dict(proxy="train", sampler="nsga2", population=exp["b_population"], **trained),
                   "C": dict(proxy="train", sampler="random", fidelity="sh", min_budget=exp["min_budget"],
                             eta=exp["eta"], **trained)}[method]
    try:
        return SearchSettings(**common, **method_part)
    except ValueError as e:
        raise _bad(str(e)) from None


# =============================================================================================
# results file
# =============================================================================================
class Store(mf.Store):
    """The results JSON: settings, supernets, study calls, studies, confirmations, presets, failures, sessions."""

    BENCH = BENCH
    EXPERIMENT_KEYS = EXPERIMENT_KEYS

    @staticmethod
    def merge_settings(old: dict[str, Any], new: dict[str, Any]) -> None:
        """A resume may add seeds; the data folder is this machine's."""
        old["seeds"] = max(old["seeds"], new["seeds"])
        old["data_dir"] = new["data_dir"]

    @classmethod
    def new_data(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return dict(benchmark=BENCH, schema_version=SCHEMA_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    settings=settings, supernets={}, chunks={}, studies={}, confirmations={}, presets={},
                    failures=[], sessions=[], analysis=None,
                    notes=["accuracy: validation top-1 in percent; throughput: images/s of the search's profiler",
                           "study history hypervolumes are of search values (A: supernet top-1); the verdict (hv) "
                           "is of confirmed (stand-alone, two seeds) values", BUDGET_RULE])


# =============================================================================================
# the study clock (studies run over several calls)
# =============================================================================================
def study_clock(study: Any, calls: Sequence[dict[str, Any]]) -> tuple[list[tuple[float, Any]], float, float]:
    """(elapsed seconds, trial) of the COMPLETE trials in order, the seconds used in all, and the first start.

    A call holds the trials numbered from its ``first_trial`` to the next call's; its clock runs from
    its first trial's start to its last trial's end (trials a killed call left RUNNING, failed later,
    are its ``killed`` and do not count); the calls' clocks add up."""
    trials = study.get_trials(deepcopy=False)
    done: list[tuple[float, Any]] = []
    used, first = 0.0, None
    for i, call in enumerate(calls):
        end = calls[i + 1]["first_trial"] if i + 1 < len(calls) else len(trials)
        killed = set(call.get("killed", ()))
        members = [t for t in trials[call["first_trial"]:end] if t.number not in killed
                   and t.datetime_start is not None and t.datetime_complete is not None]
        if not members:
            continue
        origin = min(t.datetime_start for t in members)
        first = first if first is not None else origin.timestamp()
        for t in members:
            if t.state.name == "COMPLETE":
                done.append((used + (t.datetime_complete - origin).total_seconds(), t))
        used += (max(t.datetime_complete for t in members) - origin).total_seconds()
    done.sort(key=lambda x: (x[0], x[1].number))
    return done, used, first or 0.0


def spread(points: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """At most ``k`` points spread evenly along a front by throughput (both ends kept)."""
    pts = sorted(points, key=lambda p: (p["throughput"], p[SOURCE]))
    if len(pts) <= k:
        return pts
    if k == 1:
        return [max(pts, key=lambda p: p["accuracy"])]
    idx = sorted({round(i * (len(pts) - 1) / (k - 1)) for i in range(k)})
    return [pts[i] for i in idx]


# =============================================================================================
# units
# =============================================================================================
class Bench(mf.Bench):
    """The experiment: A's supernets, the studies in calls, the confirmations and the presets."""

    name_prefix = "os"
    preset_method = "B"  # presets are trained and profiled as a trial of B
    nothing_fits_hint = "start another experiment (--out) with a smaller --a-search-seconds or --epochs"

    def __init__(self, store: Store, results_dir: Path, *, seeds: int, deadline: Optional[float] = None,
                 supernet_max_steps: Optional[int] = None, keep_weights: bool = False, keep_reports: bool = False):
        super().__init__(store, results_dir, methods=METHODS, seeds=seeds, keep_weights=keep_weights,
                         keep_reports=keep_reports)
        self.deadline, self.supernet_max_steps = deadline, supernet_max_steps
        self.margin = 0.0 if self.exp["smoke"] else 10.0  # seconds kept for writing the JSON after a call

    # ---- hooks of multifidelity.Bench ---------------------------------------------------------------
    def study_name(self, method: str, seed: int) -> str:
        return f"os-{method}-seed{seed}"

    def settings(self, method: str, seed: int) -> Any:
        return search_settings(self.exp, method, seed, storage=self.storage, results_dir=str(self.results_dir),
                               supernet_dir=self.supernet_dir(seed))

    def fidelity_of(self, method: str) -> str:
        return "sh" if method == "C" else "full"

    def gpu_seconds_of(self, method: str, seed: int) -> float:
        """The study's time budget: ``--a-search-seconds`` for A, A's total of the seed for B and C."""
        if method == "A":
            return float(self.exp["a_search_seconds"])
        total = method_seconds(self.store.data, "A", seed)
        if total is None:
            raise RuntimeError(f"the budget of {method} seed {seed} is A's total, which is not known yet")
        return total

    def completed(self, study: Any, method: str, seed: int) -> tuple[list[tuple[float, Any]], float]:
        done, _, first = study_clock(study, self.store.data[CHUNKS].get(study_key(method, seed), []))
        budget = self.gpu_seconds_of(method, seed)
        return [(s, t) for s, t in done if s <= budget], first

    def write_summary(self, path: Path) -> dict[str, Any]:
        summary, details = summarize(self.store.data)
        self.store.data["analysis"] = details
        self.store.save()
        mf.atomic_write(path, summary)
        return summary

    def check_storage(self) -> None:
        """Refuse a ``studies.db`` without the studies (or study calls) the JSON recorded."""
        super().check_storage()
        for key, calls in self.store.data[CHUNKS].items():
            method, seed = key.split(":")
            name = self.study_name(method, int(seed))
            if calls and key not in self.store.data["studies"] and self._existing(name) is None:
                raise _bad(f"study {name} is missing from {self.storage}, the JSON recorded {len(calls)} call(s) of "
                           f"it: {self.store.path} and the database must come from the same run")

    # ---- planning -------------------------------------------------------------------------------
    def supernet_dir(self, seed: int) -> Path:
        return (self.results_dir / f"supernet-seed{seed}").resolve()

    def left(self) -> Optional[float]:
        return None if self.deadline is None else self.deadline - time.time() - self.margin

    def pending(self) -> list[Unit]:
        """Units whose inputs are ready, seed by seed (the presets after seed 0): supernet calls, A's study
        calls, A's confirmations, then B's and C's study calls and confirmations (their budget is A's total)."""
        units: list[Unit] = []
        for k in range(self.seeds):
            units += self._seed_units(k)
            if k == 0:
                units += self._preset_units()
        return units

    def _preset_units(self) -> list[Unit]:
        d = self.store.data
        return [Unit("preset", mf.preset_key(n, s), self._preset_estimate(n), self._preset_runner(n, s))
                for n in self.exp["presets"] for s in self.exp["preset_seeds"]
                if mf.preset_key(n, s) not in d["presets"]]

    def _seed_units(self, k: int) -> list[Unit]:
        d = self.store.data
        sn = d["supernets"].get(str(k))
        if sn is None or sn["status"] != "done":
            steps = 0 if sn is None else sn["steps_done"]
            est = 0.0 if self.exp["smoke"] else SUPERNET_MIN_CALL_S
            return [Unit("supernet", f"{k}@{steps}", est, lambda: self.supernet_call(k))]
        units: list[Unit] = []
        for method in METHODS:
            if method != "A" and method_seconds(d, "A", k) is None:
                break  # B's and C's budget is A's total
            key = study_key(method, k)
            rec = d["studies"].get(key)
            if rec is None:
                calls = len(d[CHUNKS].get(key, []))
                units.append(Unit("study", f"{key}@{calls}", self._call_estimate(method, k),
                                  self._call_runner(method, k)))
                continue
            for p in rec["confirm"]:
                if str(p[SOURCE]) not in d["confirmations"].get(key, {}):
                    units.append(Unit("confirm", f"{key}:{p[SOURCE]}", self._confirm_estimate(p, k),
                                      self._confirm_runner(method, k, p)))
        return units

    def _training_seconds(self) -> float:
        """The longest stand-alone training at E seen so far (confirmations, presets)."""
        seen = [r["seconds"] for es in self.store.data["confirmations"].values() for e in es.values()
                for r in e["runs"] if r.get("seconds")]
        seen += [r["seconds"] for r in self.store.data["presets"].values() if r.get("seconds")]
        return max(seen) if seen else (1.0 if self.exp["smoke"] else DEFAULT_TRAINING_S)

    def _call_overhead(self) -> float:
        """A study call's seconds besides its clock (setup, the report): the median over calls so far."""
        over = [c["wall_s"] - c["used_s"] for cs in self.store.data[CHUNKS].values() for c in cs
                if c.get("wall_s") is not None and c.get("used_s") is not None]
        return max(0.0 if self.exp["smoke"] else 10.0, statistics.median(over)) if over else (
            0.0 if self.exp["smoke"] else DEFAULT_OVERHEAD_S)

    def _overrun(self, method: str) -> float:
        """How far a call's last trial may run past its timeout: a stand-alone training for B and C."""
        if method == "A":
            return 0.0 if self.exp["smoke"] else 30.0
        return 1.2 * self._training_seconds()

    def _remaining(self, method: str, seed: int) -> float:
        key = study_key(method, seed)
        calls = self.store.data[CHUNKS].get(key, [])
        used = sum(c.get("used_s") or 0.0 for c in calls)
        return self.gpu_seconds_of(method, seed) - used

    def _call_estimate(self, method: str, seed: int) -> float:
        least = 0.0 if self.exp["smoke"] else 60.0
        return self._call_overhead() + self._overrun(method) + min(max(self._remaining(method, seed), 0.0), least)

    def _confirm_estimate(self, point: dict[str, Any], seed: int) -> float:
        one = point.get("train_seconds") or self._training_seconds()
        return CONFIRM_SEEDS * 1.2 * float(one) + (0.0 if self.exp["smoke"] else 10.0)

    # ---- A's supernet -------------------------------------------------------------------------------
    def supernet_call(self, seed: int) -> str:
        """Train (or resume) seed k's supernet for what is left of the time budget; record its GPU-seconds."""
        from evaluators.supernet import train_supernet

        left = self.left()
        out = self.supernet_dir(seed)
        r = train_supernet(self.exp["space"], data=self.exp["data"], data_dir=self.exp["data_dir"], out=out,
                           epochs=float(self.exp["epochs"]), resolution=self.exp["resolution"],
                           device=self.exp["device"], time_budget=None if left is None else max(1.0, left),
                           max_steps=self.supernet_max_steps, val_subset=self.exp["val_subset"],
                           calib_images=self.exp["calib_images"], progress=not self.exp["smoke"],
                           batch_size=self.exp["batch_size"], subset=self.exp["subset"],
                           sandwich_n=self.exp["sandwich_n"], seed=seed,
                           **supernet_recipe(self.exp.get("train_recipe")))
        meta = json.loads((out / "supernet.json").read_text())
        sessions = meta.get("sessions", [])
        gpu_s = sum(float(s.get("seconds") or 0.0) * int(s.get("world_size") or 1) for s in sessions)
        self.store.data["supernets"][str(seed)] = dict(
            r.to_dict(), gpu_seconds=gpu_s, calls=len(sessions), train_seconds_total=meta.get("train_seconds"),
            dir=str(out.relative_to(self.results_dir.resolve())), largest=meta.get("largest"))
        self.store.save()
        if r.status == "nan":
            raise RuntimeError(f"the supernet of seed {seed} stopped on a NaN loss: {r.reason}")
        if r.status == "done":
            self.check_same_truth(seed)
        return (f"supernet seed {seed}: {r.status} at step {r.steps_done} of {r.total_steps} "
                f"({r.session_seconds:.0f} s this call, {gpu_s:.0f} GPU-s in all)")

    def check_same_truth(self, seed: int) -> None:
        """Refuse to go on when A's confirmation recipe (the supernet's) is not B's and C's training recipe."""
        from nas.estimators import build_estimator

        a = build_estimator(self.settings("A", seed).resolved()).confirmation().estimator.recipe.to_dict()
        b = build_estimator(self.settings("B", seed).resolved()).recipe.to_dict()
        diff = [f"{k}: A {a.get(k)!r} vs B {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            raise _bad(f"the supernet's stand-alone recipe is not the train proxy's ({'; '.join(diff)}): the three "
                       f"methods would be confirmed on different truths")

    # ---- studies in calls --------------------------------------------------------------------------
    def _call_runner(self, method: str, seed: int) -> Callable[[], str]:
        return lambda: self.study_call(method, seed)

    def study_call(self, method: str, seed: int) -> str:
        """One call of a study: search for what is left of its budget (or of the time budget), then, when its
        budget is spent (or its trial cap reached), record it with its front and the points to confirm."""
        import optuna

        from nas.heartbeat import fail_trial
        from nas.samplers import sampler_for
        from nas.search import LocalBackend, StudyDriver

        s = self.settings(method, seed)
        key = study_key(method, seed)
        calls = self.store.data[CHUNKS].setdefault(key, [])
        study = self._existing(s.study)
        killed = []
        if study is not None:  # trials a killed call left RUNNING: FAIL, and not on the clock
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if fail_trial(study._storage, t._trial_id, "the benchmark call running it was killed"):
                    killed.append(t.number)
            if killed and calls:
                calls[-1].setdefault("killed", []).extend(killed)
        n0 = 0 if study is None else len(study.trials)
        budget = self.gpu_seconds_of(method, seed)
        remaining = self._remaining(method, seed)
        left = self.left()
        timeout = remaining if left is None else min(remaining, left - self._call_overhead() - self._overrun(method))
        timeout = max(timeout, 1e-3)
        cap = self.exp["trials_cap"]
        trials = None if cap is None else max(1, cap - n0)
        if self.exp["chunk_trials"]:
            trials = min(trials or self.exp["chunk_trials"], self.exp["chunk_trials"])
        call = dict(first_trial=n0, timeout=round(timeout, 3), sampler_seed=sampler_seed(seed, len(calls)),
                    started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        calls.append(call)
        self.store.save()
        t = time.time()
        driver = StudyDriver(s.replace(timeout=timeout, trials=trials),
                             sampler=sampler_for(s, seed=call["sampler_seed"]))
        try:
            res = driver.run(LocalBackend())
        except BaseException:
            if len(self._existing(s.study).trials if self._existing(s.study) else ()) == n0:
                calls.pop()  # nothing ran: the call never happened (the unit keeps its key, a retry is one)
                self.store.save()
            raise
        study = optuna.load_study(study_name=s.study, storage=self.storage)
        _, used, _ = study_clock(study, calls)
        call.update(wall_s=round(time.time() - t, 3), n_trials=len(study.trials) - n0,
                    stopped_reason=res.stopped_reason,
                    used_s=round(used - sum(c.get("used_s") or 0.0 for c in calls[:-1]), 3))
        capped = cap is not None and len(study.trials) >= cap
        typical = self._typical_trial(study)
        if not (res.stopped_reason or capped or budget - used <= typical):
            self.store.save()
            return (f"study {method} seed {seed} call {len(calls)}: {call['n_trials']} trials in "
                    f"{call['wall_s']:.0f} s; "
                    f"{used:.0f} of {budget:.0f} s used")
        study.set_user_attr(mf.DONE_ATTR, dict(wall_s=round(sum(c["wall_s"] for c in calls if c.get("wall_s")), 3),
                                               stopped_reason=res.stopped_reason,
                                               finished=time.strftime("%Y-%m-%dT%H:%M:%S")))
        self._tidy(s.study)
        rec = self.study_record(study, method, seed)
        rec.update(budget_s=budget, used_s=used, calls=len(calls), capped=capped,
                   confirm=spread(rec["front"], int(self.exp["confirm_top"])))
        self.store.data["studies"][key] = rec
        self.store.save()
        return (f"study {method} seed {seed} done in {len(calls)} call(s): {rec['n_trials']} trials "
                f"({rec['n_complete_in_time']} complete within {budget:.0f} s); front {len(rec['front'])}, "
                f"{len(rec['confirm'])} to confirm")

    @staticmethod
    def _typical_trial(study: Any) -> float:
        """Median seconds of a finished trial: a call with less budget left than this would add nothing."""
        from nas import record as R

        walls = [float(t.user_attrs[R.WALL_S]) for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get(R.WALL_S) is not None and t.user_attrs.get(R.CACHE_HIT) is None]
        return max(1.0, statistics.median(walls)) if walls else 1.0

    # ---- confirmations -----------------------------------------------------------------------------
    def confirm_point(self, method: str, seed: int, point: dict[str, Any]) -> str:
        """Train one front point stand-alone at E with both confirmation seeds (``nas.confirm.confirm_front``;
        what the study already holds from a killed call is adopted)."""
        import optuna

        from nas import record as R
        from nas.confirm import confirm_front, confirmations

        study = optuna.load_study(study_name=self.study_name(method, seed), storage=self.storage)
        source = study.trials[point[SOURCE]]
        if source.user_attrs.get(R.ARCH_ID) != point[ARCH]:
            raise _bad(f"{study.study_name} trial #{source.number} in {self.storage} is architecture "
                       f"{source.user_attrs.get(R.ARCH_ID)}, the JSON's front point is {point[ARCH]}: the database "
                       f"is not the one written with {self.store.path}")
        runs: dict[int, dict[str, Any]] = {}
        for s in confirm_seeds(seed):
            have = [e for e in confirmations(study).get(str(source.number), []) if e.get("seed") == s]
            if have:
                runs[s] = dict(have[-1], adopted=True)
                continue
            for row in confirm_front(study, top=1, seed=s, trials=[source]):  # A: trains s and s + 1
                runs.setdefault(row["seed"], row)
        rows = [runs[s] for s in confirm_seeds(seed)]
        entry = dict(arch_id=point[ARCH], throughput=point["throughput"], search_accuracy=point["accuracy"],
                     trial=point["trial"], source=point[SOURCE],
                     runs=[{k: r.get(k) for k in ("kind", "seed", "accuracy", "epochs", "seconds", "status")}
                           for r in rows],
                     top1=[r.get("accuracy") for r in rows],
                     seconds=round(sum(float(r.get("seconds") or 0.0) for r in rows), 3))  # adopted ones too: spent
        self.store.data["confirmations"].setdefault(study_key(method, seed), {})[str(point[SOURCE])] = entry
        self.store.save()
        accs = ", ".join("NaN" if a is None else f"{a:.2f}" for a in entry["top1"])
        return (f"confirm {method} seed {seed} trial #{source.number}: search {point['accuracy']:.2f}, stand-alone "
                f"{accs} ({entry['seconds']:.1f} s)")


# =============================================================================================
# analysis
# =============================================================================================
def confirmed_points(data: dict[str, Any], key: str) -> Optional[list[dict[str, Any]]]:
    """A study's confirmed points (mean of two seeds, throughput); None until each one is confirmed.

    A point with a failed training (NaN) is left out."""
    rec = data["studies"].get(key)
    conf = data["confirmations"].get(key, {})
    if rec is None or any(str(p[SOURCE]) not in conf for p in rec["confirm"]):
        return None
    out = []
    for p in rec["confirm"]:
        e = conf[str(p[SOURCE])]
        if any(a is None for a in e["top1"]):
            continue
        out.append(dict(arch_id=e["arch_id"], throughput=e["throughput"], top1_confirmed=list(e["top1"]),
                        mean=statistics.fmean(e["top1"]), search=e["search_accuracy"]))
    return out


def method_seconds(data: dict[str, Any], method: str, seed: int) -> Optional[float]:
    """GPU-seconds ``method`` spent on ``seed`` (module docstring); None until its confirmations are done."""
    key = study_key(method, seed)
    rec = data["studies"].get(key)
    if rec is None or confirmed_points(data, key) is None:
        return None
    total = float(rec["used_s"]) + sum(e["seconds"] for e in data["confirmations"].get(key, {}).values())
    if method == "A":
        sn = data["supernets"].get(str(seed))
        if sn is None or sn.get("status") != "done":
            return None
        total += float(sn["gpu_seconds"])
    return total


def noise_groups(data: dict[str, Any]) -> list[tuple[float, int]]:
    """(variance, degrees of freedom): each confirmation pair (difference squared / 2, 1) and each preset's seeds."""
    groups = [((e["top1"][1] - e["top1"][0]) ** 2 / 2, 1) for es in data["confirmations"].values()
              for e in es.values() if len(e["top1"]) == 2 and None not in e["top1"]]
    by_preset: dict[str, list[float]] = {}
    for e in data["presets"].values():
        by_preset.setdefault(e["preset"], []).append(e["accuracy"])
    groups += [(statistics.variance(a), len(a) - 1) for a in by_preset.values() if len(a) >= 2]
    return groups


def dominance_bar(preset: dict[str, Any], noise: float) -> float:
    """Mean top-1 a confirmed point (mean of two seeds) must exceed: the preset's mean + 2 sd of the gap."""
    return preset["mean_accuracy"] + 2 * noise * math.sqrt(1 / CONFIRM_SEEDS + 1 / len(preset["accuracies"]))


def dominating(points: Sequence[dict[str, Any]], preset: dict[str, Any], noise: Optional[float]) -> list[str]:
    if noise is None:
        return []
    bar = dominance_bar(preset, noise)
    return [p["arch_id"] for p in points if p["throughput"] >= preset["throughput"] and p["mean"] > bar]


def nondominated(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other beats in both mean confirmed top-1 and throughput, fastest first."""
    idx = mf.front_indices([[p["mean"], p["throughput"]] for p in points]) if points else []
    return sorted((points[i] for i in idx), key=lambda p: -p["throughput"])


def summarize(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary (exactly ``SUMMARY_KEYS``) and the details (written into the results file) from the JSON."""
    exp = data["settings"]
    seeds, ref = int(exp["seeds"]), exp["reference"]
    pts = {m: [confirmed_points(data, study_key(m, k)) for k in range(seeds)] for m in METHODS}
    hv = {m: [None if p is None else hypervolume([[q["mean"], q["throughput"]] for q in p], ref) for p in pts[m]]
          for m in METHODS}
    secs = {m: [method_seconds(data, m, k) for k in range(seeds)] for m in METHODS}
    done = [k for k in range(seeds) if all(hv[m][k] is not None for m in METHODS)]
    mean_hv = {m: statistics.fmean(hv[m][k] for k in done) if done else None for m in METHODS}
    best = max((mean_hv["B"], mean_hv["C"]), default=None) if done else None
    ratio = mean_hv["A"] / best if done and best and best > 0 else None
    noise, dof = mf.pooled_noise(noise_groups(data))
    presets = mf.preset_points(data)
    need = seeds // 2 + 1
    by_preset = {n: [k for k in range(seeds) if dominating(pts["A"][k] or [], p, noise)] for n, p in presets.items()}
    a_all = [dict(q, seed=k) for k, p in enumerate(pts["A"]) if p for q in p]
    front = nondominated(a_all)
    devices = sorted({d for r in data["studies"].values() for d in r.get("devices", [])}
                     | {r["device"] for r in data["presets"].values() if r.get("device")}
                     | {r["device"] for r in data["supernets"].values() if r.get("device")})
    summary = dict(
        gpu=", ".join(devices) or None, dataset=exp["data"], epochs=float(exp["epochs"]), seeds=seeds,
        gpu_seconds={m: statistics.fmean(v for v in secs[m] if v is not None) if any(v is not None for v in secs[m])
                     else None for m in METHODS},
        hv=hv, hv_ratio_vs_best_baseline=ratio,
        presets_dominated_beyond_noise=sorted(n for n, ks in by_preset.items() if len(ks) >= need),
        front=[dict(arch_id=p["arch_id"], throughput=p["throughput"], top1_confirmed=p["top1_confirmed"],
                    top1_supernet=p["search"]) for p in front])
    assert tuple(summary) == SUMMARY_KEYS
    details = dict(
        target=f">= {TARGET_RATIO}", reference_point=dict(zip(OBJECTIVES, ref)), budget_rule=BUDGET_RULE,
        seeds_with_all_three=done, hv_ratio_per_seed=[
            None if k not in done or max(hv["B"][k], hv["C"][k]) <= 0 else hv["A"][k] / max(hv["B"][k], hv["C"][k])
            for k in range(seeds)],
        gpu_seconds_per_seed=secs, gpu_seconds_parts={
            study_key(m, k): dict(supernet=(data["supernets"].get(str(k)) or {}).get("gpu_seconds")
                                  if m == "A" else 0.0,
                                  search=(data["studies"].get(study_key(m, k)) or {}).get("used_s"),
                                  search_budget=(data["studies"].get(study_key(m, k)) or {}).get("budget_s"),
                                  confirmation=sum(e["seconds"] for e in
                                                   data["confirmations"].get(study_key(m, k), {}).values()))
            for m in METHODS for k in range(seeds)},
        seed_noise=noise, seed_noise_dof=dof,
        presets={n: dict(p, bar=None if noise is None else dominance_bar(p, noise), dominated_on_seeds=by_preset[n])
                 for n, p in presets.items()},
        confirmed={study_key(m, k): p for m in METHODS for k, p in enumerate(pts[m])},
        front_seeds=[p["seed"] for p in front],
        complete=len(done) == seeds and len(presets) == len(exp["presets"]),
        rules=["hv: hypervolume of (mean of two stand-alone top-1s at E, measured throughput) of each study's "
               "confirmed points, w.r.t. reference_point",
               "hv_ratio_vs_best_baseline: mean over seeds_with_all_three of A / the larger mean of B and C",
               "presets_dominated_beyond_noise: on a majority of seeds, a confirmed A point with throughput >= "
               "the preset's and mean top-1 > preset mean + 2 x seed_noise x sqrt(1/2 + 1/preset seeds)",
               "gpu_seconds: mean over seeds of each method's counted seconds (budget_rule)"])
    return summary, details


def print_table(summary: dict[str, Any], details: dict[str, Any]) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    for m in METHODS:
        print(f"{m}: HV {[fmt(v) for v in summary['hv'][m]]}, GPU-s per seed "
              f"{[fmt(v) for v in details['gpu_seconds_per_seed'][m]]}")
    print(f"HV ratio A / best of B, C = {fmt(summary['hv_ratio_vs_best_baseline'])} (target {details['target']}; "
          f"per seed {[fmt(v) for v in details['hv_ratio_per_seed']]}); seed noise {fmt(details['seed_noise'])}; "
          f"presets dominated beyond noise: {summary['presets_dominated_beyond_noise'] or 'none'}; "
          f"front {len(summary['front'])} point(s)", flush=True)


# =============================================================================================
# figure
# =============================================================================================
def plot(data: dict[str, Any], path: Path) -> Optional[Path]:
    """Left: HV against GPU-seconds (search values as lines, A's offset by its supernet; confirmed HV as
    diamonds at each method's total). Right: the confirmed points (two-seed range) and the presets."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no figure", flush=True)
        return None
    summary, details = summarize(data)
    colours = dict(A="#D55E00", B="#0072B2", C="#009E73")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.5))
    for m in METHODS:
        for k in range(int(data["settings"]["seeds"])):
            rec = data["studies"].get(study_key(m, k))
            if rec is None:
                continue
            offset = (data["supernets"].get(str(k)) or {}).get("gpu_seconds", 0.0) if m == "A" else 0.0
            xs = [offset] + [offset + s for s, _, _ in rec["history"]]
            ys = [0.0] + [v for _, v, _ in rec["history"]]
            ax.step(xs, ys, where="post", color=colours[m], lw=1.2, alpha=0.6,
                    label=f"{m}: search values" if k == 0 else None)
            total, hv = details["gpu_seconds_per_seed"][m][k], summary["hv"][m][k]
            if total is not None and hv is not None:
                ax.scatter([total], [hv], color=colours[m], marker="D", s=40, zorder=3,
                           label=f"{m}: confirmed, at its total" if k == 0 else None)
        for p in (details["confirmed"].get(study_key(m, k)) or [] for k in range(int(data["settings"]["seeds"]))):
            for q in p:
                lo, hi = min(q["top1_confirmed"]), max(q["top1_confirmed"])
                bx.errorbar([q["throughput"]], [q["mean"]], yerr=[[q["mean"] - lo], [hi - q["mean"]]],
                            fmt="o", color=colours[m], alpha=0.8 if m == "A" else 0.45, ms=4)
        bx.plot([], [], "o", color=colours[m], label=f"{m}: confirmed points (two seeds)")
    front = summary["front"]
    if front:
        bx.plot([p["throughput"] for p in front], [statistics.fmean(p["top1_confirmed"]) for p in front],
                color=colours["A"], lw=1.5, label="A: confirmed front")
    for name, p in details["presets"].items():
        bx.errorbar([p["throughput"]], [p["mean_accuracy"]],
                    yerr=[[p["mean_accuracy"] - min(p["accuracies"])], [max(p["accuracies"]) - p["mean_accuracy"]]],
                    fmt="s", color="black", ms=6)
        label = name.replace("faster_vit_", "FasterViT-").replace("_224", "")
        bx.annotate(label, (p["throughput"], p["mean_accuracy"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ref = data["settings"]["reference"]
    ax.set(xlabel="GPU-seconds (A: from the start of its supernet training)",
           ylabel="hypervolume (top-1 % x img/s)",
           title=f"{data['settings']['data']}, E = {data['settings']['epochs']:g}: HV (reference {ref[0]:g} %, "
                 f"{ref[1]:g} img/s)")
    bx.set(xscale="log", xlabel="throughput (img/s, measured)", ylabel="top-1 % (stand-alone at E, mean of 2 seeds)",
           title="confirmed points and FasterViT-0..3 (squares)")
    for a in (ax, bx):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# =============================================================================================
# main
# =============================================================================================
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default=None, help="replicates of all three methods (seeds 0..N-1; default 2)")
    p.add_argument("--epochs", type=float, default=None, help="budget E (default 16, groundtruth2's --budget-epochs)")
    p.add_argument("--data", default=None, help="default fmnist-odd (the ground-truth task)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--space", default="default")
    p.add_argument("--resolution", type=int, default=None, help="training resolution (default 64)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 512)")
    p.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    p.add_argument("--val-subset", type=int, default=None, help="validation images (default: all)")
    p.add_argument("--sandwich-n", type=int, default=2, help="random subnets per supernet step")
    p.add_argument("--train-recipe", default=None, metavar="JSON|FILE",
                   help="the recipe all three train with (nas search --train-recipe; e.g. "
                        "results/benchmarks/groundtruth2-summary.json); the supernet follows it")
    p.add_argument("--calib-images", type=int, default=None, help="BatchNorm recalibration images (default 2048)")
    p.add_argument("--a-search-seconds", type=float, default=None, help="A's search time (default 420)")
    p.add_argument("--a-population", type=int, default=None, help="A's NSGA-II population (default 24)")
    p.add_argument("--b-population", type=int, default=None, help="B's NSGA-II population (default 6)")
    p.add_argument("--min-budget", type=float, default=None, help="C's first rung in epochs (default E/4)")
    p.add_argument("--eta", type=int, default=2, help="C: the top 1/eta of a rung go on")
    p.add_argument("--confirm-top", type=int, default=None, help="front points confirmed per study (default 6)")
    p.add_argument("--trials-cap", type=int, default=None, help="at most this many trials per study (default none)")
    p.add_argument("--reference", default="10,0", help="HV reference point ACC,THR (default 10,0)")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default results/benchmarks/oneshot.json)")
    p.add_argument("--out-dir", type=Path, default=None, help="put every output in this folder")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="studies and supernets (default oneshot/ beside --out)")
    p.add_argument("--summary", type=Path, default=None, help="default oneshot-summary.json beside --out")
    p.add_argument("--plot", type=Path, default=None, help="default oneshot.png beside --out")
    p.add_argument("--time-budget", type=float, default=None, help="seconds: start no unit that would not fit")
    p.add_argument("--max-units", type=int, default=None, help="stop after this many units")
    p.add_argument("--supernet-max-steps", type=int, default=None, help="supernet steps per call at most")
    p.add_argument("--keep-weights", action="store_true", help="keep B's and C's trained weights")
    p.add_argument("--analyze", action="store_true", help="rewrite the summary and figure from --out")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny space, a few steps: checks the whole path")
    return p.parse_args(argv)


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults (smoke or GPU), check the values, place the outputs."""
    smoke = args.smoke
    defaults = dict(seeds="2", epochs=1.0 if smoke else 16.0, data="fashion-mnist" if smoke else "fmnist-odd",
                    resolution=64, batch_size=8 if smoke else 512, subset=32 if smoke else None,
                    val_subset=32 if smoke else None, calib_images=16 if smoke else 2048,
                    a_search_seconds=600.0 if smoke else 420.0, a_population=2 if smoke else 24,
                    b_population=2 if smoke else 6, confirm_top=1 if smoke else 6, trials_cap=3 if smoke else None)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.chunk_trials = 2 if smoke else None  # the smoke run's studies take two calls each
    if args.min_budget is None:
        args.min_budget = args.epochs / 4
    args.seeds = mf.parse_seeds(args.seeds)
    args.reference = mf.parse_reference(args.reference)
    for name in ("epochs", "a_search_seconds"):
        if not getattr(args, name) > 0:
            raise _bad(f"--{name.replace('_', '-')} {getattr(args, name)} must be > 0")
    for name in ("confirm_top", "max_units", "trials_cap"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise _bad(f"--{name.replace('_', '-')} {v} must be >= 1")
    if args.data_dir is not None:
        args.data_dir = os.path.relpath(args.data_dir)
    base = args.out_dir or (Path(tempfile.mkdtemp(prefix="nas-oneshot-smoke-")) if smoke and args.out is None else None)
    args.out = args.out or (base / "oneshot.json" if base else RESULTS / "oneshot.json")
    args.results_dir = args.results_dir or args.out.with_name("oneshot")
    args.summary = args.summary or args.out.with_name("oneshot-summary.json")
    args.plot = args.plot or args.out.with_name("oneshot.png")
    return args


def analyze(out: Path, summary_path: Path, plot_path: Path) -> dict[str, Any]:
    """``--analyze``: the summary and the figure from the results JSON alone."""
    store = Store.open(out, None)
    summary, details = summarize(store.data)
    mf.atomic_write(summary_path, summary)
    shown = plot(store.data, plot_path)
    print_table(summary, details)
    print(f"wrote {summary_path}" + (f" and {shown}" if shown else ""), flush=True)
    return summary


def open_bench(args: argparse.Namespace, t0: float, *, supernet_max_steps: Optional[int] = None) -> Bench:
    store = Store.open(args.out, experiment(args))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(store, args.results_dir, seeds=int(store.data["settings"]["seeds"]),
                  deadline=None if args.time_budget is None else t0 + args.time_budget,
                  supernet_max_steps=supernet_max_steps, keep_weights=args.keep_weights)
    bench.check_storage()
    return bench


def main(argv: Optional[list[str]] = None) -> int:
    t0 = time.time()
    args = resolve_args(parse_args(argv))
    if args.analyze:
        analyze(args.out, args.summary, args.plot)
        return 0
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise _bad("no CUDA GPU here: this benchmark compares methods at equal GPU time; run it on the GPU machine, "
                   "or pass --smoke for the CPU check")
    exp = experiment(args)
    for m in METHODS:  # bad values refused before any file is written
        search_settings(exp, m, 0, storage="sqlite:///:memory:", results_dir=str(args.results_dir),
                        supernet_dir=Path("unused"))
    check_recipe(exp)
    check_budget(args.train_recipe, data=exp["data"], data_dir=exp["data_dir"], epochs=exp["epochs"],
                 batch_size=exp["batch_size"], subset=exp["subset"])
    if args.smoke:
        return smoke(args, t0)
    bench = open_bench(args, t0, supernet_max_steps=args.supernet_max_steps)
    print(f"{BENCH}: {bench.seeds} seed(s), E = {args.epochs:g}; results {args.out}; studies and supernets in "
          f"{args.results_dir}", flush=True)
    mf.run_session(bench, t0=t0, time_budget=args.time_budget, max_units=args.max_units, summary_path=args.summary)
    return finish(bench, args)


def finish(bench: Bench, args: argparse.Namespace) -> int:
    """Analysis, then the exit status: 0 all done, 1 a unit failed in this session, ``PAUSED`` units left."""
    analyze(args.out, args.summary, args.plot)
    left = bench.pending()
    session = bench.store.data["sessions"][-1]
    if left and "failed" in str(session.get("stopped")):
        print(f"{session['stopped']}: see 'failures' in {args.out}; fix and run again", flush=True)
        return 1
    if left:
        print(f"{len(left)} unit(s) ready, more after them: run the same command again (exit {PAUSED})", flush=True)
        return PAUSED
    print("every unit is done", flush=True)
    return 0


def smoke(args: argparse.Namespace, t0: float) -> int:
    """Two sessions: the first stops after ``--max-units`` (default 1) with the supernet cut after one step,
    as a killed call would be; the second runs to the end. Then the checks."""
    first = open_bench(args, t0, supernet_max_steps=args.supernet_max_steps or 1)
    mf.run_session(first, t0=t0, time_budget=args.time_budget, max_units=args.max_units or 1, summary_path=args.summary)
    bench = open_bench(args, t0, supernet_max_steps=None)
    mf.run_session(bench, t0=t0, time_budget=args.time_budget, max_units=None, summary_path=args.summary)
    status = finish(bench, args)
    problems = smoke_problems(bench, json.loads(args.summary.read_text()))
    if status or problems:
        print("smoke: FAILED: " + "; ".join(problems or [f"exit {status}"]), flush=True)
        return 1
    print(f"smoke: ok, every unit done once over {len(bench.store.data['sessions'])} session(s) "
          f"({time.time() - t0:.0f} s); file {args.out}", flush=True)
    return 0


def smoke_problems(bench: Bench, summary: dict[str, Any]) -> list[str]:
    """What is wrong with a finished smoke run (empty when nothing)."""
    data = bench.store.data
    problems = [f"{len(bench.pending())} unit(s) left"] if bench.pending() else []
    units = [u for s in data["sessions"] for u in s["units"]]
    problems += [f"unit {u} ran {units.count(u)} times" for u in sorted(set(units)) if units.count(u) > 1]
    counts = mf.study_trial_counts(bench.storage)
    problems += [f"study {r['study']} has {counts.get(r['study'])} trials, recorded {r['n_trials']}"
                 for r in data["studies"].values() if counts.get(r["study"]) != r["n_trials"]]
    if tuple(summary) != SUMMARY_KEYS:
        problems.append(f"summary keys {list(summary)} are not {list(SUMMARY_KEYS)}")
    bad = [m for m in METHODS if len(summary["hv"][m]) != bench.seeds
           or not all(isinstance(v, float) and math.isfinite(v) for v in summary["hv"][m])]
    problems += [f"hv of {bad} not one finite value per seed: {summary['hv']}"] if bad else []
    return problems


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
