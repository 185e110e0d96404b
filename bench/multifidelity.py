"""Multi-fidelity vs full-budget search on trained accuracy, at equal GPU time (issue #11).

Three methods search the same space for (trained top-1 on ``fmnist-odd``, measured throughput),
each with the same GPU time per study (``--gpu-seconds``, the studies' ``timeout``), ``--seeds``
seeds each (seed k: sampler seed = training seed = k):

- ``sh``: multi-objective successive halving (``nas.fidelity``; ``--fidelity sh``), sampler
  ``--sh-sampler`` (default ``random``, as in MO-ASHA, Schmucker et al. 2021);
- ``full``: NSGA-II, every trial trained for the full budget, population ``--nsga2-population``
  (default 6: the study is bounded by time, not trials; it was chosen expecting ~15-20 full trials
  in 420 s, and on the H200 NSGA-II, breeding small fast networks, completed 94 on seed 0 (62
  trained, 32 repeats served by the architecture cache), about 15 generations; the search's
  default population, 20 without a trial budget, could leave NSGA-II in its random first
  generation and make ``full`` a second random search);
- ``random``: random search, every trial trained for the full budget;
- ``sh_nsga2`` (run only when ``--methods`` names it): successive halving as ``sh``, with NSGA-II
  (the ``full`` population) proposing the architectures. Optuna's GA counts COMPLETE trials toward
  a generation, so the rung survivors breed. It asks whether sh loses to ``full`` for its sampler
  or for its fidelity. Its hypervolumes are reported apart (``hv_extra``,
  ``hv_ratio_vs_full_extra``), so that ``hv`` keeps the issue's three keys.

``sh`` and ``random`` with the same seed draw the same sequence of architectures (common random
numbers): ``sh`` sees the ones random search trains, and more, as pruning makes room.

All use ``--proxy train`` with one recipe (``nas search``'s train proxy: 64 px, ``--train-epochs``
4 of all 40k canvases, batch 512; that is ``evaluators.train.train_proxy``'s defaults, which
differ from ``bench/groundtruth.py``'s recipe in warm-up 5 % vs 10 %, no grad clip, no
augmentation), no presets enqueued, and throughput measured by the search's profiler (batch 128,
224 px, fp16, CUDA graphs). Default rungs: ``--min-budget 1 --eta 2`` = 1, 2, 4 epochs. On
fmnist-odd training for 1/20 or 1/10 of the 4-epoch budget ranks architectures at Kendall
tau ~0.12 (every network is still near chance: the relation is learned late); 1/4 (1 epoch)
reaches 0.37 (README, "Proxies on that ground truth"). A first rung below 1 epoch would prune
at random, so the rungs start at 1 epoch.

Protocol, per study (``mf-<method>-seed<k>`` in ``<results-dir>/studies.db``):

1. Search. The time axis is seconds since the study's first trial started. Only trials COMPLETE
   within ``--gpu-seconds`` count (the last trial may overrun the timeout; it is left out, so
   every method gets the same time). History: after each completed trial, the hypervolume of the
   front so far, on **search values** (the accuracy each trial reported; plotted, not the verdict).
2. Truth. Every point of the reported front (non-dominated COMPLETE trials, one per architecture)
   is re-trained at the full budget with seed k+1 by ``nas.confirm.confirm_front`` (recorded in
   the study's ``confirmations``). The truth hypervolume is the one of (re-trained accuracy,
   measured throughput). Re-training time is recorded apart, not counted in the study's time.
3. One reference point for every study: accuracy 10.0 (chance on 10 classes), throughput
   0.0 img/s (``--reference ACC,THR``); maximised objectives become losses for
   ``nas.hypervolume.compute_hypervolume``.

Presets: FasterViT-0..3, seeds 0 and 1, measured by ``nas.trial.Evaluator.measure`` (the code a
trial runs: same profiler settings, same train recipe), each in the config a trial of the space
with its knob values gets (as ``nas.search.enqueue_presets`` queues it). Seed noise: the pooled
per-seed standard deviation of top-1 from the confirmation pairs (re-trained minus search
accuracy, per study, variance / 2) and the presets' seed pairs (front points were selected on a
high search value, so their pairs may understate it a little). An architecture in several fronts
of one seed (``sh`` and ``random`` draw the same ones) is re-trained once and its pair counted once
(``shared_from``). A preset is **dominated beyond noise** on a seed when that seed's confirmed
front has a point with throughput >= the preset's (mean of its two measurements) and re-trained
accuracy > the preset's mean accuracy + 2 sd of the gap between one seed and a mean of two
(2 x noise x sqrt(1.5)). The summary's ``presets_dominated_beyond_noise`` lists the presets the
``sh`` method dominates on a majority of seeds (``presets.*.dominated_on_seeds`` per method; one
lucky re-train is not enough). Throughput noise is ignored. A study stopped before its time (the
failure guard, a dead worker) is listed in ``invalid_studies`` and the ratio is withheld; per-seed
ratios are given beside the ratio of means.

Resumable: a unit is one study, one re-train of a front point, or one preset training. A unit starts
only when its estimate (a study: ``--gpu-seconds`` + measured overhead) fits in what is left of
``--time-budget``; the results JSON is rewritten atomically after each unit and a re-run skips
finished units; a study found unfinished in the storage (a killed run) is deleted and run again. The
JSON and ``<results-dir>/studies.db`` belong together (every GPU run starts bare: carry both there
and copy both back); a run refuses a database whose recorded studies are missing, unfinished or of
another trial count, and a re-train whose trial is another architecture. Resuming with other
settings is refused, naming the keys (``--methods`` and ``--seeds`` may grow). Outputs: the JSON
(``--out``), ``multifidelity-summary.json`` (after every unit), and a plot of hypervolume (search
values) against GPU-seconds (``multifidelity.png``). Each study's trained weights and its 4.8 MB
HTML report are deleted after it (``--keep-weights``, ``--keep-reports``; ``nas pareto --study
mf-sh-seed0 --storage sqlite:///.../studies.db`` rewrites a report); every trial stays in the SQLite
storage.

On the GPU machine, from the repository root, repeated until it says everything is done:

    PYTHONPATH=. python bench/multifidelity.py --data-dir .data/fashion-mnist --time-budget 540
    PYTHONPATH=. python bench/multifidelity.py --analyze-only
    python bench/multifidelity.py --smoke        # CPU, tiny space, 2 seeds, 5 trials a study (minutes)

``--gpu-seconds`` defaults to 420 so that one study and its overhead fit one 540-s run. GPU time
(H200, a rough estimate): 3 methods x 3 seeds x (420 s + ~40 s overhead) = ~70 min of
studies, + re-training the fronts (~9 fronts x ~6 points x ~20 s = ~18 min) + presets (8 trainings
x ~40 s = ~5 min): about 1.5 h, in ~11 runs of 9 minutes (each study needs a run of its own).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluators.jsonfile import finite, write_json  # noqa: E402

BENCH = "multifidelity"
SCHEMA_VERSION = 1
METHODS = ("sh", "full", "random")  # the three: the summary's ``hv`` keys
#: run only when named in ``--methods``: successive halving with NSGA-II proposing the architectures
#: (Optuna's GA counts COMPLETE trials toward a generation, so the rung survivors breed)
EXTRA_METHODS = ("sh_nsga2",)
ALL_METHODS = METHODS + EXTRA_METHODS
#: (fidelity, sampler) of each method; ``None``: the ``--sh-sampler``
METHOD_SEARCH = {"sh": ("sh", None), "full": ("full", "nsga2"), "random": ("full", "random"),
                 "sh_nsga2": ("sh", "nsga2")}
PRESET_NAMES = ("faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224", "faster_vit_3_224")
PRESET_SEEDS = (0, 1)
RESULTS = ROOT / "results" / "benchmarks"
TARGET = ">= 1.3"
#: fractions of a study's GPU-seconds at which the search-value HV ratios are reported (an anytime view)
TIME_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
DONE_ATTR = "multifidelity_bench"  # study user attribute set when the study's unit finished
OBJECTIVES = ("accuracy", "throughput")
#: settings that define the experiment; a resumed run must match them (methods and seeds may grow)
EXPERIMENT_KEYS = ("data", "space", "objectives", "proxy_resolution", "train_epochs", "train_subset",
                   "train_val_subset", "train_batch_size", "min_budget", "eta", "sh_sampler", "nsga2_population",
                   "gpu_seconds",
                   "trials_cap", "reference", "presets", "preset_seeds", "device", "smoke")
DEFAULT_OVERHEAD_S = 60.0  # a study's seconds beyond --gpu-seconds before one has been measured
SUMMARY_KEYS = ("gpu", "dataset", "seeds", "gpu_seconds_per_study", "hv", "hv_ratio_sh_vs_full",
                "presets_dominated_beyond_noise")

#: a front point's record keys (``reported_front``), read by the re-train and the analysis
SOURCE, ARCH, ACCURACY, THROUGHPUT = "source", "arch_id", "accuracy", "throughput"
#: a re-train reused from another method's study (same architecture, same re-train seed)
SHARED_FROM = "shared_from"


def study_key(method: str, seed: int) -> str:
    """The key of a study in the results file (``studies``, ``confirmations``): ``METHOD:SEED``."""
    return f"{method}:{seed}"


def key_method(key: str) -> str:
    """The method of a ``study_key`` (``sh:1`` -> ``sh``)."""
    return key.split(":")[0]


def preset_key(name: str, seed: int) -> str:
    return f"{name}:{seed}"


TINY_SPACE = dict(
    name="tiny", base=dict(resolution=64, dim=16, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                           window_size=[2, 2, 2, 2], ct_size=1, num_classes=10),
    knobs={"dim": {"choices": [8, 16, 24]}, "depths[2]": {"choices": [1, 2]}, "mlp_ratio": {"choices": [2.0, 4.0]}})
SMOKE_PRESETS = {
    "tiny_a": dict(resolution=64, dim=8, in_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                   window_size=[2, 2, 2, 2], ct_size=1, num_classes=10),
    "tiny_b": dict(resolution=64, dim=24, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                   window_size=[2, 2, 2, 2], ct_size=1, num_classes=10)}


# =============================================================================================
# settings
# =============================================================================================
def _bad(msg: str) -> "SystemExit":
    return SystemExit(f"error: {msg}")


def parse_methods(text: str) -> list[str]:
    """``sh,full,random`` -> the list (unknown or repeated names refused)."""
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown or not names:
        what = f"unknown method {unknown[0]!r}" if unknown else "no method"
        raise _bad(f"--methods {text!r}: {what}; known: {', '.join(ALL_METHODS)}")
    if len(set(names)) != len(names):
        raise _bad(f"--methods {text!r} names a method twice")
    return names


def parse_seeds(text: Any) -> int:
    """``--seeds N``: the number of seeds (seeds 0..N-1), an integer >= 1."""
    try:
        n = int(str(text))
    except ValueError:
        n = 0
    if n < 1 or str(n) != str(text).strip():
        raise _bad(f"--seeds {text!r} must be the number of seeds, an integer >= 1 (seeds 0..N-1 are run)")
    return n


def parse_reference(text: str) -> list[float]:
    """``ACC,THR`` -> two finite floats."""
    try:
        ref = [float(v) for v in str(text).split(",")]
    except ValueError:
        ref = []
    if len(ref) != 2 or not all(math.isfinite(v) for v in ref):
        raise _bad(f"--reference {text!r} must be two numbers ACC,THR (top-1 %, img/s), e.g. 10,0")
    return ref


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    """The settings written into the results JSON (``EXPERIMENT_KEYS`` plus methods and seeds)."""
    return dict(data=args.data, space="tiny" if args.smoke else args.space, objectives=list(OBJECTIVES),
                proxy_resolution=args.proxy_resolution, train_epochs=args.train_epochs, train_subset=args.train_subset,
                train_val_subset=args.train_val_subset, train_batch_size=args.train_batch_size,
                min_budget=args.min_budget, eta=args.eta, sh_sampler=args.sh_sampler,
                nsga2_population=args.nsga2_population, gpu_seconds=args.gpu_seconds,
                trials_cap=args.trials_cap, reference=args.reference,
                presets=list(SMOKE_PRESETS) if args.smoke else list(PRESET_NAMES), preset_seeds=list(PRESET_SEEDS),
                device="cpu" if args.smoke else "cuda", smoke=bool(args.smoke), methods=list(args.methods),
                seeds=args.seeds, data_dir=args.data_dir,
                profiler="nas search's defaults for the device (CUDA: batch 128, fp16, cudagraph, 10 repeats)",
                recipe="evaluators.train.train_proxy defaults (nas search --proxy train), at proxy_resolution")


def study_name(method: str, seed: int) -> str:
    return f"mf-{method}-seed{seed}"


def search_settings(exp: dict[str, Any], method: str, seed: int, *, storage: str, results_dir: str) -> Any:
    """The ``SearchSettings`` of one study (validated: bad --eta / --min-budget are refused here)."""
    from nas.settings import SearchSettings

    fidelity, sampler = METHOD_SEARCH[method]
    sampler = sampler or exp["sh_sampler"]
    space = TINY_SPACE if exp["smoke"] else exp["space"]
    try:  # settings are checked when they are made
        return SearchSettings(objectives=tuple(exp["objectives"]), proxy="train", trials=exp["trials_cap"],
                              timeout=float(exp["gpu_seconds"]), sampler=sampler,
                              population=exp["nsga2_population"] if sampler == "nsga2" else None,
                              space=space, data=exp["data"],
                              data_dir=exp["data_dir"], storage=storage, study=study_name(method, seed),
                              device=exp["device"], seed=seed, enqueue_presets=False,
                              proxy_resolution=exp["proxy_resolution"], train_epochs=exp["train_epochs"],
                              train_subset=exp["train_subset"], train_val_subset=exp["train_val_subset"],
                              train_batch_size=exp["train_batch_size"], fidelity=fidelity,
                              min_budget=exp["min_budget"] if fidelity == "sh" else None,
                              eta=exp["eta"], results_dir=results_dir, quiet=True,
                              measure_references=False)  # the bench trains the presets itself, with seeds
    except ValueError as e:
        raise _bad(str(e)) from None


# =============================================================================================
# results file
# =============================================================================================
def atomic_write(path: Path, data: Any) -> None:
    """Write JSON to ``path`` whole or not at all (non-finite floats as null)."""
    write_json(path, data)


class Store:
    """The results JSON: settings, studies, confirmations, presets, failures, sessions.

    Another benchmark reuses it by overriding ``BENCH``, ``EXPERIMENT_KEYS``, ``merge_settings``
    and ``new_data`` (``bench/oneshot.py``)."""

    BENCH = BENCH
    EXPERIMENT_KEYS = EXPERIMENT_KEYS

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    @classmethod
    def open(cls, path: Path, settings: Optional[dict[str, Any]]) -> "Store":
        """Resume ``path`` (refused when ``settings`` differ in ``EXPERIMENT_KEYS``) or create it."""
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise _bad(f"{path} is not valid JSON ({e}); move it away or pass another --out") from None
            if data.get("benchmark") != cls.BENCH:
                raise _bad(f"{path} is not a {cls.BENCH} results file")
            if settings is not None:
                check_same(path, data["settings"], settings, cls.EXPERIMENT_KEYS)
                cls.merge_settings(data["settings"], settings)
            return cls(path, data)
        if settings is None:
            raise _bad(f"{path} does not exist (nothing to analyse)")
        store = cls(path, cls.new_data(settings))
        store.save()
        return store

    @staticmethod
    def merge_settings(old: dict[str, Any], new: dict[str, Any]) -> None:
        """A resume may add methods and seeds; the data folder is this machine's."""
        old["methods"] = [m for m in ALL_METHODS if m in old["methods"] or m in new["methods"]]
        old["seeds"] = max(old["seeds"], new["seeds"])
        old["data_dir"] = new["data_dir"]  # where the data is on this machine

    @classmethod
    def new_data(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """A new results file's contents."""
        return dict(benchmark=cls.BENCH, schema_version=SCHEMA_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    settings=settings, studies={}, confirmations={}, presets={}, failures=[], sessions=[],
                    notes=["accuracy: validation top-1 in percent; throughput: images/s of the search's profiler",
                           "history hypervolumes are of search values; the verdict (hv) is of re-trained values"])

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write(self.path, self.data)


def check_same(path: Path, old: dict[str, Any], new: dict[str, Any], keys: Sequence[str] = EXPERIMENT_KEYS) -> None:
    """Refuse a resume whose experiment settings (``keys``) differ, naming every differing key."""
    diff = [k for k in keys if finite(old.get(k)) != finite(new.get(k))]
    if diff:
        lines = ", ".join(f"{k}: file {old.get(k)!r} vs now {new.get(k)!r}" for k in diff)
        raise _bad(f"{path} holds another experiment ({lines}); pass the same options to resume, or another --out")


# =============================================================================================
# hypervolume and fronts
# =============================================================================================
def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """HV of (accuracy, throughput) points, both maximised, w.r.t. ``reference`` (as losses)."""
    import numpy as np

    from nas.hypervolume import compute_hypervolume

    if not len(points):
        return 0.0
    return float(compute_hypervolume(-np.asarray(points, dtype=float), [-v for v in reference]))


def front_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (both objectives maximised)."""
    from nas.fidelity import nondominated_fronts

    fronts = nondominated_fronts([list(p) for p in points], [True] * len(OBJECTIVES))
    return [i for i, f in enumerate(fronts) if f == 0]


def completed_in_time(study: Any, gpu_seconds: float) -> tuple[list[tuple[float, Any]], float]:
    """(elapsed seconds, trial) of COMPLETE trials by completion time, those within ``gpu_seconds``; start time."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return [], 0.0
    t0 = min(starts)
    done = [((t.datetime_complete - t0).total_seconds(), t) for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_complete is not None]
    done.sort(key=lambda x: (x[0], x[1].number))
    return [(s, t) for s, t in done if s <= gpu_seconds], t0.timestamp()


def hv_history(done: Sequence[tuple[float, Any]], reference: Sequence[float]) -> list[list[float]]:
    """[elapsed s, HV of the search values so far, trial number] after each completed trial."""
    out, pts = [], []
    for s, t in done:
        pts.append(list(t.values))
        out.append([round(s, 3), hypervolume(pts, reference), t.number])
    return out


def reported_front(done: Sequence[tuple[float, Any]]) -> list[dict[str, Any]]:
    """The front of the completed trials, one point per architecture (a cache hit stands for its source)."""
    from nas import record as R

    idx = front_indices([t.values for _, t in done])
    out, seen = [], set()
    for i in sorted(idx, key=lambda i: (-done[i][1].values[0], done[i][1].number)):
        s, t = done[i]
        source = t.user_attrs.get(R.CACHE_HIT, t.number)
        if source in seen:
            continue
        seen.add(source)
        out.append(dict(trial=t.number, source=source, arch_id=t.user_attrs.get(R.ARCH_ID), accuracy=t.values[0],
                        throughput=t.values[1], elapsed_s=round(s, 3)))
    return out


# =============================================================================================
# units
# =============================================================================================
@dataclass
class Unit:
    """One resumable piece of work: ``run()`` does it, records it in the store and returns a progress line."""

    kind: str
    key: str
    estimate_s: float
    run: Callable[[], str]


class Bench:
    """The experiment: its store, its storage, and the units left to do.

    Hooks for a benchmark that reuses these units (``bench/oneshot.py``): ``study_name``,
    ``gpu_seconds_of``, ``completed``, ``fidelity_of``, ``settings``, ``preset_method``,
    ``write_summary`` and ``nothing_fits_hint``."""

    name_prefix = "mf"  # studies are NAME_PREFIX-METHOD-seedK, preset runs NAME_PREFIX-preset-K
    preset_method = "full"  # presets are measured with this method's settings
    nothing_fits_hint = "start another experiment (--out) with a smaller --gpu-seconds"

    def __init__(self, store: Store, results_dir: Path, *, methods: Sequence[str], seeds: int,
                 keep_weights: bool = False, keep_reports: bool = False):
        self.store, self.results_dir = store, results_dir
        self.exp = store.data["settings"]
        self.methods, self.seeds = list(methods), seeds
        self.storage = f"sqlite:///{(results_dir / 'studies.db').resolve()}"
        self.keep_weights, self.keep_reports = keep_weights, keep_reports

    def check_storage(self) -> None:
        """Refuse a ``studies.db`` that is not the one written with the results JSON.

        Each GPU run starts on a bare machine: the JSON and ``studies.db`` travel together. A
        missing or older database would make a re-train pick another trial's architecture.
        """
        for rec in self.store.data["studies"].values():
            study = self._existing(rec["study"])
            problem = ("is missing" if study is None else "was not finished by this benchmark"
                       if study.user_attrs.get(DONE_ATTR) is None else
                       f"has {len(study.trials)} trials, the JSON recorded {rec['n_trials']}"
                       if len(study.trials) != rec["n_trials"] else None)
            if problem:
                raise _bad(f"study {rec['study']} in {self.storage} {problem}: {self.store.path} and "
                           f"{self.results_dir / 'studies.db'} must come from the same run (carry both, or start "
                           f"another experiment with --out)")

    # ---- planning ------------------------------------------------------------------------------
    def pending(self) -> list[Unit]:
        """Units not done yet, in priority order: studies, then front re-trains, then presets."""
        d = self.store.data
        units = [Unit("study", study_key(m, k), self._study_estimate(), self._study_runner(m, k))
                 for k in range(self.seeds) for m in self.methods if study_key(m, k) not in d["studies"]]
        for k in range(self.seeds):
            for m in self.methods:
                rec = d["studies"].get(study_key(m, k))
                done = d["confirmations"].get(study_key(m, k), {})
                for p in (rec or {}).get("front", []):
                    if str(p[SOURCE]) not in done:
                        units.append(Unit("confirm", f"{study_key(m, k)}:{p[SOURCE]}", self._confirm_estimate(p, k),
                                          self._confirm_runner(m, k, p)))
        for name in self.exp["presets"]:
            for seed in self.exp["preset_seeds"]:
                if preset_key(name, seed) not in d["presets"]:
                    units.append(Unit("preset", preset_key(name, seed), self._preset_estimate(name),
                                      self._preset_runner(name, seed)))
        return units

    def study_name(self, method: str, seed: int) -> str:
        return f"{self.name_prefix}-{method}-seed{seed}"

    def gpu_seconds_of(self, method: str, seed: int) -> float:
        """The GPU-seconds a study of ``method`` and ``seed`` is given."""
        return float(self.exp["gpu_seconds"])

    def fidelity_of(self, method: str) -> str:
        return METHOD_SEARCH[method][0]

    def completed(self, study: Any, method: str, seed: int) -> tuple[list[tuple[float, Any]], float]:
        """(elapsed s, trial) of the COMPLETE trials that count, and the study's start time (``completed_in_time``)."""
        return completed_in_time(study, self.gpu_seconds_of(method, seed))

    def write_summary(self, path: Path) -> dict[str, Any]:
        """The summary file, rewritten after every unit."""
        return write_summary(self.store.data, path)

    def _study_estimate(self) -> float:
        g = float(self.exp["gpu_seconds"])
        over = [r["wall_s"] - g for r in self.store.data["studies"].values() if r.get("wall_s") is not None]
        return g + (max(10.0, statistics.median(over)) if over else DEFAULT_OVERHEAD_S)

    def _confirm_estimate(self, point: dict[str, Any], seed: int) -> float:
        if self.shared_retrain(point[ARCH], seed + 1) is not None:
            return 1.0
        return 1.2 * float(point.get("train_seconds") or DEFAULT_OVERHEAD_S) + 10.0

    def shared_retrain(self, arch_id: str, seed: int) -> Optional[tuple[str, dict[str, Any]]]:
        """(study key, entry) of a re-train of ``arch_id`` with ``seed`` already made for any study, else None."""
        for key, entries in self.store.data["confirmations"].items():
            for e in entries.values():
                if e.get(ARCH) == arch_id and e.get("seed") == seed and not e.get(SHARED_FROM):
                    return key, e
        return None

    def _preset_estimate(self, name: str) -> float:
        seen = [r["seconds"] for k, r in self.store.data["presets"].items() if k.rsplit(":", 1)[0] == name
                and r.get("seconds")]
        return 1.2 * max(seen) + 10.0 if seen else 2 * DEFAULT_OVERHEAD_S

    def settings(self, method: str, seed: int) -> Any:
        return search_settings(self.exp, method, seed, storage=self.storage, results_dir=str(self.results_dir))

    # ---- studies -------------------------------------------------------------------------------
    def _study_runner(self, method: str, seed: int) -> Callable[[], str]:
        return lambda: self.run_study(method, seed)

    def run_study(self, method: str, seed: int) -> str:
        """Run (or adopt a finished) study, record it with its history and front; returns the progress line."""
        import optuna

        from nas.search import run_search

        s = self.settings(method, seed)
        study = self._existing(s.study)
        if study is not None and study.user_attrs.get(DONE_ATTR) is None:
            print(f"  study {s.study} was left unfinished by a killed run: deleted, run again", flush=True)
            optuna.delete_study(study_name=s.study, storage=self.storage)
            study = None
        how = "adopted from the storage"
        if study is None:
            t = time.time()
            res = run_search(s)
            study = optuna.load_study(study_name=s.study, storage=self.storage)
            study.set_user_attr(DONE_ATTR, dict(wall_s=round(time.time() - t, 3), stopped_reason=res.stopped_reason,
                                                finished=time.strftime("%Y-%m-%dT%H:%M:%S")))
            how = "ran"
            self._tidy(s.study)
        rec = self.study_record(study, method, seed)
        self.store.data["studies"][study_key(method, seed)] = rec
        self.store.save()
        return (f"study {method} seed {seed} ({s.study}, {how}): {rec['n_trials']} trials ({rec['n_complete']} "
                f"complete, {rec['n_pruned']} pruned, {rec['n_failed']} failed; {rec['n_complete_in_time']} complete "
                f"within {self.exp['gpu_seconds']:g} s) in {rec['wall_s']:.0f} s; front {len(rec['front'])} points; "
                f"HV (search values) {rec['hv_search']:.6g}")

    def _tidy(self, study: str) -> None:
        """Delete the trials' weights and the 4.8 MB HTML report (``nas pareto`` rewrites it; the PNG stays)."""
        if not self.keep_weights:
            shutil.rmtree(self.results_dir / "weights" / study, ignore_errors=True)
        if not self.keep_reports:
            (self.results_dir / "reports" / f"{study}.html").unlink(missing_ok=True)

    def _existing(self, name: str) -> Any:
        import optuna

        try:
            return optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            return None

    def study_record(self, study: Any, method: str, seed: int) -> dict[str, Any]:
        """Counts, wall time, HV history on search values and the reported front of a finished study."""
        from nas import record as R
        from nas.search import state_counts

        counts = state_counts(study)
        done, t0 = self.completed(study, method, seed)
        hist = hv_history(done, self.exp["reference"])
        front = reported_front(done)
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for p in front:
            src = trials[p["source"]].user_attrs
            p["train_seconds"] = ((src.get(R.PROXY) or {}).get("train") or {}).get("seconds")
        devices = sorted({t.user_attrs.get(R.DEVICE) for t in trials.values() if t.user_attrs.get(R.DEVICE)})
        profile = next((t.user_attrs[R.PROFILE] for t in trials.values() if t.user_attrs.get(R.PROFILE)), {})
        meta = study.user_attrs.get(DONE_ATTR) or {}
        return dict(method=method, seed=seed, study=study.study_name, wall_s=meta.get("wall_s"),
                    stopped_reason=meta.get("stopped_reason"), first_trial_start=t0, n_trials=len(trials),
                    n_complete=counts["complete"], n_pruned=counts["pruned"], n_failed=counts["failed"],
                    n_complete_in_time=len(done), last_counted_s=done[-1][0] if done else 0.0,
                    hv_search=hist[-1][1] if hist else 0.0, history=hist, front=front,
                    devices=devices, profile_protocol={k: profile.get(k) for k in
                                                       ("batch_size", "resolution", "dtype", "mode", "gpu_name")},
                    rungs_reached=_rungs_reached(trials.values()) if self.fidelity_of(method) == "sh" else None,
                    trial_seconds=trial_seconds(trials.values()), **trained_counts(trials.values()))

    # ---- front re-trains -----------------------------------------------------------------------
    def _confirm_runner(self, method: str, seed: int, point: dict[str, Any]) -> Callable[[], str]:
        return lambda: self.confirm_point(method, seed, point)

    def confirm_point(self, method: str, seed: int, point: dict[str, Any]) -> str:
        """Re-train one front point with ``nas.confirm.confirm_front`` (seed + 1, the study's settings)."""
        import optuna

        from nas.confirm import confirm_front, confirmations

        from nas import record as R

        study = optuna.load_study(study_name=self.study_name(method, seed), storage=self.storage)
        source = study.trials[point[SOURCE]]
        if source.user_attrs.get(R.ARCH_ID) != point[ARCH]:
            raise _bad(f"{study.study_name} trial #{source.number} in {self.storage} is architecture "
                       f"{source.user_attrs.get(R.ARCH_ID)}, the JSON's front point is {point[ARCH]}: the database "
                       f"is not the one written with {self.store.path}")
        have = [e for e in confirmations(study).get(str(source.number), []) if e.get("seed") == seed + 1]
        shared = self.shared_retrain(point[ARCH], seed + 1)
        if have:  # re-trained by a run killed before it wrote the JSON
            row, how = dict(trial=source.number, **have[-1]), "adopted from the study"
        elif shared is not None:  # the same architecture and re-train seed in another method's front
            keep = ("seed", "accuracy", "search_seed", "epochs", "seconds", "status")
            row = dict({k: shared[1].get(k) for k in keep}, trial=source.number, **{SHARED_FROM: shared[0]})
            row["search_accuracy"] = point[ACCURACY]
            how = f"shared with study {shared[0]}"
        else:
            (row,) = confirm_front(study, top=1, seed=seed + 1, trials=[source])
            how = "re-trained"
        entry = dict(row, throughput=point["throughput"], arch_id=point["arch_id"], front_trial=point["trial"])
        self.store.data["confirmations"].setdefault(study_key(method, seed), {})[str(point[SOURCE])] = entry
        self.store.save()
        acc = "NaN" if entry["accuracy"] is None else f"{entry['accuracy']:.2f}"
        return (f"confirm {method} seed {seed} trial #{source.number} ({how}): search {entry['search_accuracy']:.2f}, "
                f"re-trained {acc} (seed {entry['seed']}, {entry['seconds']:.1f} s)")

    # ---- presets -------------------------------------------------------------------------------
    def _preset_runner(self, name: str, seed: int) -> Callable[[], str]:
        return lambda: self.measure_preset(name, seed)

    def measure_preset(self, name: str, seed: int) -> str:
        """Train and profile one preset exactly as a trial of the ``full`` studies is measured."""
        from nas.objectives import parse_objectives
        from nas.trial import Evaluator

        s = self.settings(self.preset_method, seed).replace(study=f"{self.name_prefix}-preset-{seed}").resolved()
        objectives = parse_objectives(s.objectives)
        ev = Evaluator(s, objectives, [])
        ev.prepare()
        cfg = preset_config(name, s.space, bool(self.exp["smoke"])).replace(num_classes=ev.num_classes)
        attrs: dict[str, Any] = {}
        t = time.perf_counter()
        m = ev.measure(cfg, attrs.__setitem__)
        values = [float(o.extract(m)) for o in objectives]
        train = (attrs.get("proxy") or {}).get("train") or {}
        prof = m.get("profile") or {}
        entry = dict(preset=name, seed=seed, accuracy=values[0], throughput=values[1], params=m.get("params"),
                     flops=m.get("flops"), seconds=round(time.perf_counter() - t, 3),
                     train_seconds=train.get("seconds"), device=ev.device_name, arch_id=cfg.arch_id,
                     drop_path_rate=cfg.drop_path_rate,
                     profile_protocol={k: prof.get(k) for k in ("batch_size", "resolution", "dtype", "mode", "gpu_name")})
        self.store.data["presets"][preset_key(name, seed)] = entry
        self.store.save()
        return (f"preset {name} seed {seed}: top-1 {entry['accuracy']:.2f}, {entry['throughput']:,.0f} img/s "
                f"({entry['seconds']:.1f} s)")


def preset_config(name: str, space: Any, smoke: bool) -> Any:
    """The preset as a trial of ``space`` would train it (``nas.search.enqueue_presets``' rule: the
    space's config for the preset's knob values, e.g. FasterViT-3 with the space's drop-path 0.2, not
    0.3), else ``search_spaces.PRESETS[name]``; in the smoke run a tiny stand-in config."""
    from search_spaces import PRESETS, FasterViTConfig
    from search_spaces.space import load_space

    if smoke:
        return FasterViTConfig.from_dict(SMOKE_PRESETS[name])
    sp = load_space(space)
    params = sp.params_for(PRESETS[name])
    return PRESETS[name] if params is None else sp.apply(params)


def trained_counts(trials: Any) -> dict[str, int]:
    """``n_trained``: trials that trained (COMPLETE or PRUNED, not served by the architecture cache);
    ``n_cache_hits``: those the cache served (a sampler proposing an architecture again)."""
    from nas import record as R

    ended = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    hits = sum(t.user_attrs.get(R.CACHE_HIT) is not None for t in ended)
    return dict(n_trained=len(ended) - hits, n_cache_hits=hits)


def trial_seconds(trials: Any) -> dict[str, float]:
    """Median wall seconds of a trial by how it ended (a stopped one by the epochs it trained).

    Says what a rung stop saves: the fixed cost of a trial (profiling, building, the first
    validation) does not shrink with the epochs trained."""
    from collections import defaultdict

    from nas import record as R

    by: dict[str, list[float]] = defaultdict(list)
    for t in trials:
        wall = t.user_attrs.get(R.WALL_S)
        if wall is None or t.state.name not in ("COMPLETE", "PRUNED", "FAIL"):
            continue
        if t.user_attrs.get(R.CACHE_HIT) is not None:
            continue  # a cache hit trains nothing
        name = t.state.name.lower()
        if t.state.name == "PRUNED" and t.user_attrs.get(R.RUNG_EPOCHS) is not None:
            name = f"pruned@{t.user_attrs[R.RUNG_EPOCHS]:g}ep"
        by[name].append(float(wall))
    return {k: round(statistics.median(v), 3) for k, v in sorted(by.items())}


def _rungs_reached(trials: Any) -> dict[str, int]:
    """How many trials reached each rung (by its epochs) in an ``sh`` study."""
    from collections import Counter

    from nas import record as R

    c: Counter = Counter()
    for t in trials:
        for e in t.user_attrs.get(R.RUNGS) or ():
            c[f"{e['epochs']:g}"] += 1
    return dict(sorted(c.items(), key=lambda kv: float(kv[0])))


# =============================================================================================
# running units
# =============================================================================================
def run_session(bench: Bench, *, t0: float, time_budget: Optional[float], max_units: Optional[int],
                summary_path: Path) -> list[str]:
    """Run pending units while they fit in the time budget (and ``max_units``); returns the keys done."""
    store = bench.store
    session = dict(started=time.strftime("%Y-%m-%dT%H:%M:%S"), units=[], stopped=None)
    store.data["sessions"].append(session)
    failed: set[str] = set()
    while max_units is None or len(session["units"]) < max_units:
        units = [u for u in bench.pending() if f"{u.kind}:{u.key}" not in failed]
        if not units:
            session["stopped"] = "nothing left to do" if not failed else f"{len(failed)} unit(s) failed"
            break
        left = None if time_budget is None else time_budget - (time.time() - t0)
        unit = next((u for u in units if left is None or u.estimate_s <= left), None)
        if unit is None:
            session["stopped"] = (f"time budget: {len(units)} unit(s) left, none fits in {left:.0f} s "
                                  f"(smallest estimate {min(u.estimate_s for u in units):.0f} s)")
            if not session["units"]:  # a session that starts nothing: a re-run would start nothing either
                store.save()
                small = min(units, key=lambda u: u.estimate_s)
                raise _bad(f"nothing fits: {small.kind} {small.key} needs ~{small.estimate_s:.0f} s, {left:.0f} s of "
                           f"--time-budget {time_budget:g} are left: raise --time-budget, or "
                           f"{bench.nothing_fits_hint}")
            break
        name = f"{unit.kind}:{unit.key}"
        print(f"[{len(session['units']) + 1}] {unit.kind} {unit.key} (estimate {unit.estimate_s:.0f} s) ...", flush=True)
        try:
            line = unit.run()
        except Exception as e:  # recorded (a trial failure, OOM, ...); a later run retries it
            failed.add(name)
            store.data["failures"].append(dict(unit=name, error=f"{type(e).__name__}: {e}"[:800],
                                               at=time.strftime("%Y-%m-%dT%H:%M:%S")))
            print(f"  FAILED {name}: {type(e).__name__}: {e}", flush=True)
            store.save()
            continue
        session["units"].append(name)
        store.save()
        bench.write_summary(summary_path)
        print(f"  {line} | {time.time() - t0:.0f} s elapsed", flush=True)
    else:
        session["stopped"] = f"--max-units {max_units}"
    session["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    store.save()
    print(f"session: {len(session['units'])} unit(s) done; stopped: {session['stopped']}", flush=True)
    return list(session["units"])


# =============================================================================================
# analysis
# =============================================================================================
def truth_points(data: dict[str, Any], key: str) -> Optional[list[list[float]]]:
    """(re-trained accuracy, throughput) of a study's front; None until every point is re-trained."""
    rec = data["studies"].get(key)
    conf = data["confirmations"].get(key, {})
    if rec is None or any(str(p[SOURCE]) not in conf for p in rec["front"]):
        return None
    return [[conf[str(p[SOURCE])]["accuracy"], p["throughput"]] for p in rec["front"]
            if conf[str(p[SOURCE])].get("accuracy") is not None]


def seed_noise(data: dict[str, Any]) -> tuple[Optional[float], int]:
    """Pooled per-seed sd of top-1 and its degrees of freedom (confirmation pairs per study, preset seeds).

    Only the issue's three methods' studies count (an extra method leaves the verdict as it was); a
    pair shared between studies counts once, in its first base-method study."""
    return pooled_noise(noise_groups(data))


def pooled_noise(groups: Sequence[tuple[float, int]]) -> tuple[Optional[float], int]:
    """Pooled sd of (per-seed variance, degrees of freedom) groups and the total degrees of freedom."""
    dof = sum(n for _, n in groups)
    if dof == 0:
        return None, 0
    return math.sqrt(sum(v * n for v, n in groups) / dof), dof


def noise_groups(data: dict[str, Any], methods: Sequence[str] = METHODS) -> list[tuple[float, int]]:
    """(per-seed variance, degrees of freedom) of each study's re-train pairs (``methods`` only) and each
    preset's seeds."""
    groups: list[tuple[float, int]] = []
    for key, entries in data["confirmations"].items():
        if key_method(key) not in methods:
            continue
        diffs = [e["accuracy"] - e["search_accuracy"] for e in entries.values()
                 if e.get("accuracy") is not None
                 and (not e.get(SHARED_FROM) or key_method(e[SHARED_FROM]) not in methods)]
        if len(diffs) >= 2:
            groups.append((statistics.variance(diffs) / 2, len(diffs) - 1))
    by_preset: dict[str, list[float]] = {}
    for e in data["presets"].values():
        by_preset.setdefault(e["preset"], []).append(e["accuracy"])
    for accs in by_preset.values():
        if len(accs) >= 2:
            groups.append((statistics.variance(accs), len(accs) - 1))
    return groups


def preset_points(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per preset with every seed measured: mean accuracy, accuracies, mean throughput."""
    out: dict[str, dict[str, Any]] = {}
    seeds = data["settings"]["preset_seeds"]
    for name in data["settings"]["presets"]:
        runs = [data["presets"].get(f"{name}:{s}") for s in seeds]
        if any(r is None for r in runs):
            continue
        accs = [r["accuracy"] for r in runs]
        out[name] = dict(mean_accuracy=statistics.fmean(accs), accuracies=accs,
                         throughput=statistics.fmean(r["throughput"] for r in runs), params=runs[0].get("params"))
    return out


def dominance_bar(preset: dict[str, Any], noise: float) -> float:
    """Accuracy a single re-trained point must exceed: the preset's mean + 2 sd of their difference.

    The difference of one seed and a mean of n seeds has sd ``noise * sqrt(1 + 1/n)``.
    """
    return preset["mean_accuracy"] + 2 * noise * math.sqrt(1 + 1 / len(preset["accuracies"]))


def dominated_by(points: Sequence[Sequence[float]], preset: dict[str, Any],
                 noise: Optional[float]) -> list[list[float]]:
    """Confirmed points with throughput >= the preset's and accuracy above ``dominance_bar``."""
    if noise is None:
        return []
    bar = dominance_bar(preset, noise)
    return [list(p) for p in points if p[1] >= preset["throughput"] and p[0] > bar]


def dominating_seeds(data: dict[str, Any], method: str, preset: dict[str, Any], noise: Optional[float]) -> list[int]:
    """Seeds whose confirmed ``method`` front dominates ``preset`` beyond noise."""
    return [k for k in range(int(data["settings"]["seeds"]))
            if dominated_by(truth_points(data, study_key(method, k)) or [], preset, noise)]


def verdict_presets(data: dict[str, Any], method: str, presets: dict[str, Any], noise: Optional[float]) -> list[str]:
    """Presets dominated beyond noise by a majority of ``method``'s seeds (one lucky re-train is not enough)."""
    need = int(data["settings"]["seeds"]) // 2 + 1
    return sorted(n for n, p in presets.items() if len(dominating_seeds(data, method, p, noise)) >= need)


def search_hv_at(history: Sequence[Sequence[float]], seconds: float) -> float:
    """HV of the search values after the last trial completed by ``seconds`` (0 before the first)."""
    return max((v for s, v, _ in history if s <= seconds), default=0.0)


def search_hv_by_time(data: dict[str, Any], methods: Sequence[str]) -> dict[str, Any]:
    """Per method and seed, the search-value HV at each of ``TIME_FRACTIONS`` of the GPU-seconds."""
    g, seeds = float(data["settings"]["gpu_seconds"]), int(data["settings"]["seeds"])
    hv: dict[str, list[Optional[list[float]]]] = {}
    near_final: dict[str, list[Optional[float]]] = {}
    for m in methods:
        recs = [data["studies"].get(study_key(m, k)) for k in range(seeds)]
        hv[m] = [None if r is None else [search_hv_at(r["history"], f * g) for f in TIME_FRACTIONS] for r in recs]
        near_final[m] = [None if r is None else seconds_to_reach(r["history"], 0.99) for r in recs]
    return dict(seconds=[f * g for f in TIME_FRACTIONS], hv=hv, seconds_to_99pct_of_final=near_final)


def seconds_to_reach(history: Sequence[Sequence[float]], fraction: float) -> Optional[float]:
    """When the search-value HV first reached ``fraction`` of its final value (None: no trial completed)."""
    if not history:
        return None
    final = history[-1][1]
    return min(s for s, v, _ in history if v >= fraction * final)


def invalid_studies(data: dict[str, Any]) -> dict[str, str]:
    """Studies that stopped before their time (failure guard, dead worker): key -> the reason."""
    return {k: r["stopped_reason"] for k, r in sorted(data["studies"].items()) if r.get("stopped_reason")}


def nan_retrains(data: dict[str, Any], key: str) -> int:
    return sum(e.get("accuracy") is None for e in data["confirmations"].get(key, {}).values())


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """The summary JSON (``SUMMARY_KEYS`` first, then details) from the results file alone."""
    exp = data["settings"]
    seeds, ref = int(exp["seeds"]), exp["reference"]
    methods = run_methods(exp)
    hv_all, hv_search, confirmed = {}, {}, {}
    for m in methods:
        pts = [truth_points(data, study_key(m, k)) for k in range(seeds)]
        hv_all[m] = [None if p is None else hypervolume(p, ref) for p in pts]
        hv_search[m] = [data["studies"].get(study_key(m, k), {}).get("hv_search") for k in range(seeds)]
        confirmed[m] = [q for p in pts if p for q in p]
    noise, dof = seed_noise(data)
    presets = preset_points(data)
    by_method = {m: verdict_presets(data, m, presets, noise) for m in methods}
    invalid = invalid_studies(data)
    hv = {m: hv_all[m] for m in METHODS}
    devices = sorted({d for k, r in data["studies"].items() if key_method(k) in METHODS for d in r.get("devices", [])}
                     | {r["device"] for r in data["presets"].values() if r.get("device")})
    out = dict(gpu=", ".join(devices) or None, dataset=exp["data"], seeds=seeds,
               gpu_seconds_per_study=float(exp["gpu_seconds"]), hv=hv,
               hv_ratio_sh_vs_full=_valid_ratio(hv, "sh", invalid),
               presets_dominated_beyond_noise=by_method["sh"])
    out.update(target=TARGET, reference_point=dict(zip(OBJECTIVES, ref)), hv_ratio_per_seed=_ratios_per_seed(hv),
               invalid_studies=invalid, hv_search_values=hv_search,
               hv_search_ratio_sh_vs_full=_ratio(hv_search), seed_noise=noise, seed_noise_dof=dof,
               presets_dominated_beyond_noise_by_method=by_method,
               hv_search_by_time=search_hv_by_time(data, methods),
               presets_dominance_pending=_pending_note(data, presets, noise),
               presets={n: dict(p, bar=None if noise is None else dominance_bar(p, noise),
                                dominated_on_seeds={m: dominating_seeds(data, m, p, noise) for m in methods},
                                dominated_beyond_noise_by={m: dominated_by(confirmed[m], p, noise) for m in methods})
                        for n, p in presets.items()},
               studies={k: dict(n_trials=r["n_trials"], n_complete=r["n_complete"], n_pruned=r["n_pruned"],
                                n_failed=r["n_failed"], n_complete_in_time=r["n_complete_in_time"], wall_s=r["wall_s"],
                                front=len(r["front"]), confirmed=len(data["confirmations"].get(k, {})),
                                nan_retrains=nan_retrains(data, k), stopped_reason=r.get("stopped_reason"))
                        for k, r in sorted(data["studies"].items())},
               complete=all(v is not None for m in METHODS for v in hv[m]) and len(presets) == len(exp["presets"])
               and not any(key_method(k) in METHODS for k in invalid),
               rules=["hv: hypervolume of (re-trained accuracy, measured throughput) of each study's front",
                      "presets_dominated_beyond_noise: presets that sh's confirmed front dominates on a majority of "
                      "seeds; on a seed, a point with throughput >= the preset's and re-trained accuracy > preset "
                      "mean + 2 x seed_noise x sqrt(1 + 1/preset seeds) (2 sd of a one-seed vs n-seed-mean gap)",
                      "hv_search_by_time: HV of the search values of the trials completed by each of seconds, "
                      "and when each study first reached 99 % of its final one (not re-trained: an anytime "
                      "view of the search, not the verdict)",
                      "hv_ratio_sh_vs_full: mean over seeds of sh / mean of full; None while a study of either "
                      "is missing or invalid (stopped before its time: invalid_studies)",
                      "seed_noise: pooled per-seed sd of top-1 (confirmation pairs per study / 2, preset seeds)"])
    extra = [m for m in methods if m not in METHODS]
    if extra:  # methods beyond the three: apart, so that ``hv`` keeps its keys
        out.update(hv_extra={m: hv_all[m] for m in extra},
                   hv_ratio_vs_full_extra={m: _valid_ratio(hv_all, m, invalid) for m in extra},
                   hv_ratio_per_seed_extra={m: _ratios_per_seed(hv_all, m) for m in extra})
    return out


def run_methods(exp: dict[str, Any]) -> list[str]:
    """The issue's three methods, then the extra ones this experiment runs (``--methods``)."""
    return list(METHODS) + [m for m in EXTRA_METHODS if m in exp.get("methods", ())]


def hv_by_method(summary: dict[str, Any]) -> dict[str, list[Optional[float]]]:
    """Truth HV per seed of every method the summary has: the issue's three, then the extra ones."""
    return {**summary["hv"], **summary.get("hv_extra", {})}


def _valid_ratio(hv: dict[str, list[Optional[float]]], method: str, invalid: dict[str, str]) -> Optional[float]:
    """``method`` / full of the truth HV means; None while a study of either is invalid."""
    return None if any(key_method(k) in (method, "full") for k in invalid) else _ratio(hv, method)


def _pending_note(data: dict[str, Any], presets: dict[str, Any], noise: Optional[float]) -> Optional[str]:
    """Why ``presets_dominated_beyond_noise`` may still grow (None once every input is measured)."""
    missing = [n for n in data["settings"]["presets"] if n not in presets]
    open_fronts = [study_key("sh", k) for k in range(int(data["settings"]["seeds"]))
                   if truth_points(data, study_key("sh", k)) is None]
    parts = ([f"presets not measured on every seed: {missing}"] if missing else []) + \
        ([f"sh fronts not re-trained yet: {open_fronts}"] if open_fronts else []) + \
        (["no seed noise yet"] if noise is None else [])
    return "; ".join(parts) or None


def _ratios_per_seed(hv: dict[str, list[Optional[float]]], method: str = "sh") -> list[Optional[float]]:
    """``method`` / full per seed (a ratio of means can hinge on one seed)."""
    return [None if s is None or f is None or f <= 0 else s / f for s, f in zip(hv[method], hv["full"])]


def _ratio(hv: dict[str, list[Optional[float]]], method: str = "sh") -> Optional[float]:
    sh, full = hv[method], hv["full"]
    if not sh or any(v is None for v in sh + full) or statistics.fmean(full) <= 0:
        return None
    return statistics.fmean(sh) / statistics.fmean(full)


def write_summary(data: dict[str, Any], path: Path) -> dict[str, Any]:
    summary = summarize(data)
    atomic_write(path, summary)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    """Per method: truth HV and search-value HV per seed, then the verdict lines."""
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    hv_of = hv_by_method(summary)
    for m in hv_of:
        print(f"{m:8s} HV truth {[fmt(v) for v in hv_of[m]]}  search values "
              f"{[fmt(v) for v in summary['hv_search_values'][m]]}")
    r = summary["hv_ratio_sh_vs_full"]
    print(f"HV ratio sh/full (truth) = {fmt(r)} (target {TARGET}; per seed "
          f"{[fmt(v) for v in summary['hv_ratio_per_seed']]}); seed noise {fmt(summary['seed_noise'])} points; "
          f"presets dominated beyond noise (sh, majority of seeds): "
          f"{summary['presets_dominated_beyond_noise'] or 'none'}")
    for m, r in summary.get("hv_ratio_vs_full_extra", {}).items():
        print(f"HV ratio {m}/full (truth) = {fmt(r)} (per seed "
              f"{[fmt(v) for v in summary['hv_ratio_per_seed_extra'][m]]})")
    for key, reason in summary["invalid_studies"].items():
        print(f"INVALID study {key}: stopped before its time ({reason}); the ratios of {key_method(key)} are withheld",
              flush=True)


def markdown(data: dict[str, Any], summary: dict[str, Any]) -> str:
    """The README tables (all from the results JSON): one row per finished study, truth-HV ratios per
    seed, search-value HV ratios over time, then the presets."""
    head = ["study", "trials (complete / pruned / failed)", "complete in time", "front",
            "front's fastest (img/s, re-trained top-1)", "trained (cache hits)", "median s per trial",
            "HV truth (10⁶)", "HV search (10⁶)"]
    body = []
    hv_of = hv_by_method(summary)
    for k in range(int(summary["seeds"])):
        for m in hv_of:
            r = data["studies"].get(study_key(m, k))
            if r is None:
                continue
            hv = hv_of[m][k]
            pts = truth_points(data, study_key(m, k))
            fastest = max(pts, key=lambda q: q[1]) if pts else None
            body.append([f"{m} seed {k}", f"{r['n_trials']} ({r['n_complete']} / {r['n_pruned']} / {r['n_failed']})",
                         r["n_complete_in_time"], len(r["front"]),
                         "-" if fastest is None else f"{fastest[1]:,.0f}, {fastest[0]:.2f}",
                         f"{r.get('n_trained', '-')} ({r.get('n_cache_hits', '-')})",
                         ", ".join(f"{end} {v:.1f}" for end, v in r.get("trial_seconds", {}).items()),
                         "-" if hv is None else f"{hv / 1e6:.3f}", f"{r['hv_search'] / 1e6:.3f}"])
    rows = _md_table(head, body)
    rows += ["", *ratio_rows(summary), "", *anytime_rows(summary), "", *preset_rows(summary)]
    return "\n".join(rows)


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _md_table(head: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table's lines: the head, its rule, then one line per row of cells."""
    return [_md_row(head), "|---" * len(head) + "|", *map(_md_row, body)]


def _quotient(num: float, den: float) -> str:
    """``num / den`` to three places; "-" where the denominator's front is empty (HV 0)."""
    return "-" if den <= 0 else f"{num / den:.3f}"


def ratio_rows(summary: dict[str, Any]) -> list[str]:
    """Truth-HV ratios per seed with all three studies re-trained, then the ratio of their means."""
    hv = summary["hv"]
    pairs = (("sh", "full"), ("sh", "random"), ("full", "random"))
    done = [k for k in range(int(summary["seeds"])) if all(hv[m][k] is not None for m in METHODS)]
    body = [[k, *(_quotient(hv[a][k], hv[b][k]) for a, b in pairs)] for k in done]
    if len(done) > 1:
        mean = {m: statistics.fmean(hv[m][k] for k in done) for m in METHODS}
        body.append([f"mean of seeds {', '.join(map(str, done))}", *(_quotient(mean[a], mean[b]) for a, b in pairs)])
    return _md_table(["seed", *(f"{a} / {b} (truth HV)" for a, b in pairs)], body)


def anytime_rows(summary: dict[str, Any]) -> list[str]:
    """sh / full and sh / random of the search-value HV at fractions of the study time, per seed."""
    by_time = summary["hv_search_by_time"]
    hv = by_time["hv"]
    body = [[f"sh / {other}, seed {k}", *("-" if b <= 0 else f"{a / b:.3f}" for a, b in zip(hv["sh"][k], hv[other][k]))]
            for other in ("full", "random") for k in range(int(summary["seeds"]))
            if hv["sh"][k] is not None and hv[other][k] is not None]
    return _md_table(["search-value HV ratio, after", *(f"{s:.0f} s" for s in by_time["seconds"])], body)


def preset_rows(summary: dict[str, Any]) -> list[str]:
    """Per preset: its seeds, throughput, the bar a front point must pass and the seeds whose front did."""
    body = [[name, " / ".join(f"{a:.2f}" for a in p["accuracies"]), f"{p['throughput']:,.0f}",
             "-" if p["bar"] is None else f"{p['bar']:.2f}",
             " / ".join(", ".join(map(str, p["dominated_on_seeds"][m])) or "none" for m in METHODS)]
            for name, p in summary["presets"].items()]
    return _md_table(["preset", "top-1 per seed", "img/s", "bar (top-1 %)",
                      f"beaten beyond noise on seeds ({' / '.join(METHODS)})"], body)


# =============================================================================================
# plot
# =============================================================================================
def plot(data: dict[str, Any], path: Path) -> Optional[Path]:
    """HV (search values) against GPU-seconds: one thin line per seed, the mean over seeds thick."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no plot", flush=True)
        return None
    import numpy as np

    g = float(data["settings"]["gpu_seconds"])
    grid = np.linspace(0, g, 400)
    fig, ax = plt.subplots(figsize=(8, 5))
    for m, colour in zip(run_methods(data["settings"]), ("#D55E00", "#0072B2", "#009E73", "#CC79A7")):
        curves = [_step(r["history"], grid) for k, r in data["studies"].items() if key_method(k) == m]
        for c in curves:
            ax.plot(grid, c, color=colour, lw=0.7, alpha=0.4)
        if curves:
            ax.plot(grid, np.mean(curves, axis=0), color=colour, lw=2.2, label=f"{m} (mean of {len(curves)} seeds)")
        truth = [hypervolume(p, data["settings"]["reference"]) for k in data["studies"] if key_method(k) == m
                 for p in [truth_points(data, k)] if p is not None]
        if truth:
            ax.scatter([g] * len(truth), truth, color=colour, marker="D", s=30, zorder=3,
                       label=f"{m}: re-trained front at the end (truth, per seed)")
    ref = data["settings"]["reference"]
    ax.set(xlabel="GPU-seconds since the study's first trial", ylabel="hypervolume of search values (top-1 % x img/s)",
           title=f"{data['settings']['data']}: HV so far (reference {ref[0]:g} %, {ref[1]:g} img/s)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _step(history: Sequence[Sequence[float]], grid: Any) -> Any:
    import numpy as np

    out = np.zeros(len(grid))
    for s, v, _ in history:
        out[grid >= s] = v
    return out


# =============================================================================================
# main
# =============================================================================================
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None,
                   help="comma list of sh, full, random and sh_nsga2 (default: a resumed file's methods, "
                        "else sh,full,random)")
    p.add_argument("--seeds", default=None, help="number of seeds per method (seeds 0..N-1; default 3, smoke 2)")
    p.add_argument("--gpu-seconds", type=float, default=None, help="GPU time of every study (default 420)")
    p.add_argument("--trials-cap", type=int, default=None, help="at most this many trials per study (default none)")
    p.add_argument("--min-budget", type=float, default=1.0, help="epochs of the first sh rung")
    p.add_argument("--eta", type=int, default=2, help="sh: the top 1/eta of each rung go on")
    p.add_argument("--sh-sampler", default="random", help="sampler of the sh method (MO-ASHA: random)")
    p.add_argument("--nsga2-population", type=int, default=None,
                   help="NSGA-II's population in the full and sh_nsga2 methods (default 6: full completed 94 "
                        "trials, 62 of them trained, in 420 s on seed 0 on an H200, ~15 generations; smoke 2)")
    p.add_argument("--train-epochs", type=float, default=None, help="full training budget (default 4)")
    p.add_argument("--train-subset", type=int, default=None, help="training images (default: all 40k)")
    p.add_argument("--train-val-subset", type=int, default=None, help="validation images (default: all 10k)")
    p.add_argument("--train-batch-size", type=int, default=None, help="default 512")
    p.add_argument("--proxy-resolution", type=int, default=64)
    p.add_argument("--space", default="default")
    p.add_argument("--data", default=None, help="default fmnist-odd")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--reference", default="10,0", help="common HV reference point ACC,THR (default 10,0)")
    p.add_argument("--results-dir", type=Path, default=None, help="studies, logs, reports (default: multifidelity/ "
                   "beside --out, i.e. results/benchmarks/multifidelity/)")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default results/benchmarks/multifidelity.json)")
    p.add_argument("--summary", type=Path, default=None, help="default: multifidelity-summary.json beside --out")
    p.add_argument("--plot", type=Path, default=None, help="default: multifidelity.png beside --out")
    p.add_argument("--out-dir", type=Path, default=None, help="put every output in this folder")
    p.add_argument("--time-budget", type=float, default=None, help="seconds: start no unit that would not fit")
    p.add_argument("--max-units", type=int, default=None, help="stop after this many units")
    p.add_argument("--keep-weights", action="store_true", help="keep the trials' trained weights")
    p.add_argument("--keep-reports", action="store_true", help="keep each study's HTML report (4.8 MB each)")
    p.add_argument("--analyze-only", action="store_true", help="rewrite the summary and plot from --out")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny space, 2 seeds, a few trials; tests resuming")
    return p.parse_args(argv)


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults (smoke or GPU), check the values, place the outputs."""
    smoke = args.smoke
    defaults = dict(seeds="2" if smoke else "3", gpu_seconds=600.0 if smoke else 420.0, trials_cap=5 if smoke else None,
                    nsga2_population=2 if smoke else 6,
                    train_epochs=4.0, train_subset=64 if smoke else None, train_val_subset=64 if smoke else None,
                    train_batch_size=16 if smoke else 512, data="fashion-mnist" if smoke else "fmnist-odd")
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.sh_sampler != "random":  # NSGA-II counts only COMPLETE trials toward a generation; TPE/GP start-ups
        raise _bad(f"--sh-sampler {args.sh_sampler!r}: only 'random' (MO-ASHA's sampler; the sh method is the "
                   "issue's MO-ASHA): for successive halving with NSGA-II name the extra method, --methods "
                   "sh,full,random,sh_nsga2; TPE/GP start-up counts assume full-budget trials")
    args.seeds = parse_seeds(args.seeds)
    args.reference = parse_reference(args.reference)
    if not args.gpu_seconds > 0:
        raise _bad(f"--gpu-seconds {args.gpu_seconds} must be > 0")
    if args.max_units is not None and args.max_units < 1:
        raise _bad(f"--max-units {args.max_units} must be >= 1")
    if args.data_dir is not None:  # relative: a study stores it, and nas.confirm re-reads it from there
        args.data_dir = os.path.relpath(args.data_dir)
    base = args.out_dir or (Path(tempfile.mkdtemp(prefix="nas-mf-smoke-")) if smoke and args.out is None else None)
    args.out = args.out or (base / "multifidelity.json" if base else RESULTS / "multifidelity.json")
    args.results_dir = args.results_dir or args.out.with_name("multifidelity")
    args.summary = args.summary or args.out.with_name("multifidelity-summary.json")
    args.plot = args.plot or args.out.with_name("multifidelity.png")
    args.methods = parse_methods(args.methods or ",".join(resumed_methods(args.out) or METHODS))
    return args


def resumed_methods(out: Path) -> Optional[list[str]]:
    """The methods recorded in an existing results file (the default ``--methods`` of a resume), else None.

    An unreadable file gives None here; ``Store.open`` then refuses it with the reason."""
    try:
        data = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    methods = (data.get("settings") or {}).get("methods") if isinstance(data, dict) else None
    return [m for m in methods if m in ALL_METHODS] if isinstance(methods, list) else None


def analyze(out: Path, summary_path: Path, plot_path: Path) -> dict[str, Any]:
    """``--analyze-only``: the summary and plot from the results JSON alone."""
    data = Store.open(out, None).data
    summary = write_summary(data, summary_path)
    shown = plot(data, plot_path)
    print_table(summary)
    print(markdown(data, summary), flush=True)
    print(f"wrote {summary_path}" + (f" and {shown}" if shown else ""), flush=True)
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    t0 = time.time()
    args = resolve_args(parse_args(argv))
    if args.analyze_only:
        analyze(args.out, args.summary, args.plot)
        return 0
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise _bad("no CUDA GPU here: this benchmark compares search methods at equal GPU time; run it on the GPU "
                   "machine, or pass --smoke for the CPU check")
    exp = experiment(args)
    for m in args.methods:  # bad --eta / --min-budget / --sh-sampler refused before any file is written
        search_settings(exp, m, 0, storage="sqlite:///:memory:", results_dir=str(args.results_dir))
    store = Store.open(args.out, exp)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    print(f"{BENCH}: methods {args.methods}, {args.seeds} seed(s), {args.gpu_seconds:g} GPU-s per study; results "
          f"{args.out}; studies {args.results_dir / 'studies.db'}", flush=True)
    if args.smoke:
        return smoke(args, t0)
    bench = Bench(store, args.results_dir, methods=args.methods, seeds=args.seeds, keep_weights=args.keep_weights,
                  keep_reports=args.keep_reports)
    bench.check_storage()
    run_session(bench, t0=t0, time_budget=args.time_budget, max_units=args.max_units, summary_path=args.summary)
    settings = store.data["settings"]  # the experiment's methods and seeds, which may be more than this command's
    left = Bench(store, args.results_dir, methods=settings["methods"], seeds=settings["seeds"]).pending()
    analyze(args.out, args.summary, args.plot)
    print(f"{len(left)} unit(s) left: run the same command again" if left else "every unit is done", flush=True)
    return 0


def study_trial_counts(storage: str) -> dict[str, int]:
    """Trials per study in ``storage`` (the smoke run and the test check that resuming added none)."""
    import optuna

    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(optuna.storages.RDBStorage(storage))}


def smoke(args: argparse.Namespace, t0: float) -> int:
    """Two sessions (the first stopped after 4 units, as a killed run would be), then the checks."""
    def session(max_units: Optional[int]) -> tuple[Bench, list[str]]:
        b = Bench(Store.open(args.out, experiment(args)), args.results_dir, methods=args.methods, seeds=args.seeds)
        b.check_storage()
        return b, run_session(b, t0=t0, time_budget=args.time_budget, max_units=max_units, summary_path=args.summary)

    session(args.max_units or 4)
    bench, _ = session(None)
    written = json.loads(args.summary.read_text()) if args.summary.is_file() else None
    summary = analyze(args.out, args.summary, args.plot)
    problems = smoke_problems(bench, summary)
    if written is not None and written != json.loads(args.summary.read_text()):
        problems.append("--analyze-only gave another summary than the run wrote")
    if problems:
        print("smoke: FAILED: " + "; ".join(problems), flush=True)
        return 1
    print(f"smoke: ok, every unit done once over {len(bench.store.data['sessions'])} session(s), resume repeated "
          f"nothing ({time.time() - t0:.0f} s); file {args.out}", flush=True)
    return 0


def smoke_problems(bench: Bench, summary: dict[str, Any]) -> list[str]:
    """What is wrong with a finished smoke run (empty when nothing)."""
    data = bench.store.data
    problems = [f"{len(bench.pending())} unit(s) left"] if bench.pending() else []
    seen: dict[str, int] = {}
    for s in data["sessions"]:
        for u in s["units"]:
            seen[u] = seen.get(u, 0) + 1
    problems += [f"unit {u} ran {n} times" for u, n in seen.items() if n > 1]
    counts = study_trial_counts(bench.storage)
    problems += [f"study {r['study']} has {counts.get(r['study'])} trials, recorded {r['n_trials']}"
                 for r in data["studies"].values() if counts.get(r["study"]) != r["n_trials"]]
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    problems += [f"summary lacks {missing}"] if missing else []
    hv_of = hv_by_method(summary)
    bad = [m for m in bench.methods if len(hv_of[m]) != bench.seeds
           or not all(isinstance(v, float) and math.isfinite(v) for v in hv_of[m])]
    problems += [f"hv of {bad} not one finite value per seed: {hv_of}"] if bad else []
    return problems


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
