"""A ground truth where capacity can show (issue #29): stable recipe, enough data, converged budget.

The first ground truth (``bench/groundtruth.py``, 4 epochs, lr 1e-3) measured mostly how a network
copes with an unstable recipe. This experiment is built in plans, each a list of training runs
(architecture x data x recipe x seed), run in priority order by worker processes that share one
GPU, written to ``--out`` after every run and skipped when already there, so runs of at most ~9
minutes add up to the whole experiment:

- ``data``: FasterViT-0..3 and the two smallest nets of the first ground truth at equal steps on
  ``fmnist-odd`` with 40k training canvases, 160k, and canvases drawn afresh per batch
  (``train=stream``), plus a second seed on the stream: does more data let capacity pay?
- ``canvas``: the same nets on a 128 px canvas with 5 items on a 4x4 grid (``train=stream``).
- ``recipe``: LR, warm-up, EMA and drop-path variants on FasterViT-2/3 and the smallest net.
- ``budget``: >= 12 architectures at E/4, E, 2E (``--budget-epochs E``) on the chosen task.
- ``gt``: >= 30 architectures at E (FasterViT-0..3 included), >= 12 with a second seed.

Architectures come from the first ground truth's file (``results/benchmarks/groundtruth.json``:
60 archs of the default space, named fv0..fv3, s00..s55), so the two can be compared arch by arch.
Epochs count nominal 40k-canvas epochs for every size of ``fmnist-odd``: equal steps, equal images
seen. On another ``--task`` (``imagefolder:PATH``: a user checking a budget on their own data) the
recipe, budget and gt plans count epochs of that task's training split.

    python bench/groundtruth2.py --smoke                                 # CPU, tiny, checks the path
    python bench/groundtruth2.py --plans data,canvas --time-budget 420    # GPU, resumable
    python bench/groundtruth2.py --analyze                                # summary JSON + tables
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:  # run as a script from anywhere (spawned workers re-import this file)
        sys.path.insert(0, str(p))

import groundtruth  # noqa: E402
from groundtruth import _error_text  # noqa: E402

from evaluators.jsonfile import write_json  # noqa: E402

BENCH = "groundtruth2"
SCHEMA_VERSION = 1
DEFAULT_OUT = ROOT / "results" / "benchmarks" / "groundtruth2.json"
SUMMARY = ROOT / "results" / "benchmarks" / "groundtruth2-summary.json"
ARCH_SOURCE = ROOT / "results" / "benchmarks" / "groundtruth.json"
PRESETS = ("fv0", "fv1", "fv2", "fv3")
SMALLEST = ("s00", "s21")
#: one nominal epoch: 40k canvases (evaluators.data.COMPOSED_SIZES["train"]) at batch 512
EPOCH_IMAGES = 40_000
#: the stable recipe of issue #29's probe (lr 3.5e-4 at 256 sqrt-scaled, 20 % warm-up), with the
#: first ground truth's batch, clipping and augmentation
BASE_RECIPE: dict[str, Any] = dict(batch_size=512, lr=3.5e-4, lr_scaling="sqrt", weight_decay=0.05, warmup=0.2,
                                   label_smoothing=0.1, grad_clip=1.0, drop_path_rate=0.0,
                                   augment=dict(crop=0.0625, flip=True), resolution=64, compile="graph")
DATA_64 = "fmnist-odd"
DATA_160K = "fmnist-odd:train=160000"
DATA_STREAM = "fmnist-odd:train=stream"
DATA_128 = "fmnist-odd:canvas=128,grid=4,items=5,train=stream"
#: a run whose top-1 falls by more than this between two evaluations and does not recover
COLLAPSE_DROP = 20.0


# =============================================================================================
# runs
# =============================================================================================
def steps_for(epochs: float, batch_size: int, epoch_images: int = EPOCH_IMAGES) -> int:
    """Steps of ``epochs`` epochs of ``epoch_images`` (last partial batch dropped, as the trainer does)."""
    return max(1, round(epochs * max(1, epoch_images // batch_size)))


def recipe_dict(epochs: float, epoch_images: int = EPOCH_IMAGES, **changes: Any) -> dict[str, Any]:
    """A full ``TrainRecipe`` dict: the base recipe, ``changes``, and the steps of ``epochs``."""
    r = dict(BASE_RECIPE, **changes)
    r["steps"] = steps_for(epochs, r["batch_size"], epoch_images)
    r["eval_every"] = max(1, r["steps"] // 16)
    return r


def run_key(run: dict[str, Any]) -> str:
    """Identity of a run: arch, data, seed and a hash of the recipe."""
    h = hashlib.sha1(json.dumps(run["recipe"], sort_keys=True).encode()).hexdigest()[:10]
    return f"{run['arch']}|{run['data']}|{run['seed']}|{h}"


def _run(plan: str, arch: str, data: str, seed: int, recipe: dict[str, Any], tag: str = "") -> dict[str, Any]:
    return dict(plan=plan, arch=arch, data=data, seed=seed, recipe=recipe, tag=tag)


def plan_data(epochs: float) -> list[dict[str, Any]]:
    archs = SMALLEST + PRESETS
    r = recipe_dict(epochs)
    runs = [_run("data", a, DATA_STREAM, 0, r, "stream") for a in archs]
    runs += [_run("data", a, DATA_64, 0, r, "40k") for a in archs]
    runs += [_run("data", a, DATA_STREAM, 1, r, "stream") for a in archs]
    runs += [_run("data", a, DATA_160K, 0, r, "160k") for a in archs]
    return runs


#: the canvas plan's second seed: the two smallest nets and FasterViT-0 give the seed sd at 128 px; a
#: second seed of FasterViT-1..3 there would cost ~14 of its ~33 GPU-minutes (H100 estimate) and is
#: worth it only if seed 0 shows that 128 px separates the presets better than 64 px
CANVAS_RESEEDED = SMALLEST + ("fv0",)


def plan_canvas(epochs: float) -> list[dict[str, Any]]:
    r = recipe_dict(epochs, resolution=128)
    return ([_run("canvas", a, DATA_128, 0, r, "128px") for a in SMALLEST + PRESETS]
            + [_run("canvas", a, DATA_128, 1, r, "128px") for a in CANVAS_RESEEDED])


#: the recipe plan's variants of BASE_RECIPE, in priority order. ``lrhalf`` first: the presets' stream
#: curves at lr 3.5e-4 still dip by 9-18 points right after warm-up (fv0 63 -> 53, see top1_history)
RECIPE_VARIANTS: dict[str, dict[str, Any]] = {
    "lrhalf": dict(lr=1.75e-4), "ema": dict(ema_decay=0.999), "lr2x": dict(lr=7e-4), "warm5": dict(warmup=0.05),
    "dpath": dict(drop_path_rate=0.1), "bs256": dict(batch_size=256)}
RECIPE_ARCHS = ("fv2", "fv3", "s00")


def plan_recipe(epochs: float, data: str, epoch_images: int = EPOCH_IMAGES) -> list[dict[str, Any]]:
    return [_run("recipe", a, data, 0, recipe_dict(epochs, epoch_images, **v), name)
            for name, v in RECIPE_VARIANTS.items() for a in RECIPE_ARCHS]


#: archs of the budget plan trained with a second seed at 2E: the spread there is judged against its
#: own seed noise (the smallest, so cheapest: ~2 GPU-minutes for four on an H100)
N_RESEED_2E = 4
#: each budget of the budget plan as a multiple of E (tables in this order)
BUDGET_FACTOR = {"E/4": 0.25, "E": 1.0, "2E": 2.0}


def plan_budget(epochs: float, data: str, archs: list[str], reseed_2e: Sequence[str] = (),
                epoch_images: int = EPOCH_IMAGES) -> list[dict[str, Any]]:
    runs = []
    for tag in ("E", "E/4", "2E"):  # priority order: E is shared with the gt plan
        runs += [_run("budget", a, data, 0, recipe_dict(epochs * BUDGET_FACTOR[tag], epoch_images), tag) for a in archs]
    two_e = recipe_dict(epochs * BUDGET_FACTOR["2E"], epoch_images)
    return runs + [_run("budget", a, data, 1, two_e, "2E") for a in reseed_2e]


def smallest_archs(archs: list[str], pool: dict[str, dict[str, Any]], n: int = N_RESEED_2E) -> list[str]:
    """The ``n`` archs of ``archs`` with the fewest params (the pool's count)."""
    return sorted(archs, key=lambda a: pool[a].get("params") or 0)[:n]


def plan_gt(epochs: float, data: str, archs: list[str], n_reseed: int, epoch_images: int = EPOCH_IMAGES
            ) -> list[dict[str, Any]]:
    r = recipe_dict(epochs, epoch_images)
    runs = [_run("gt", a, data, 0, r, "E") for a in archs]
    step = max(1, len(archs) // max(1, n_reseed))
    return runs + [_run("gt", a, data, 1, r, "E") for a in archs[::step][:n_reseed]]


def budget_archs(pool: dict[str, dict[str, Any]], n: int = 14) -> list[str]:
    """FasterViT-0..3, the smallest nets, then archs spread over the first ground truth's params."""
    fixed = [a for a in PRESETS + SMALLEST if a in pool]
    rest = sorted((a for a in pool if a not in fixed), key=lambda a: pool[a].get("params") or 0)
    k = n - len(fixed)
    if len(rest) <= k:  # a small pool (--smoke): all of it
        return fixed + rest
    return fixed + [rest[round(i * (len(rest) - 1) / max(1, k - 1))] for i in range(k)]


def is_fmnist_odd(task: str) -> bool:
    """Whether ``task`` is (a variant of) the composed fmnist-odd task, whose epochs are nominal."""
    return task.split(":")[0] == DATA_64


def task_epoch_images(args: argparse.Namespace) -> int:
    """Images in one epoch of ``--task``: nominal 40k for ``fmnist-odd`` (every size: equal steps), else the
    task's training split, counted once (an image folder is listed, not read)."""
    return _epoch_images(args.task, getattr(args, "data_dir", None))


@functools.lru_cache(maxsize=8)
def _epoch_images(task: str, data_dir: Optional[str]) -> int:
    if is_fmnist_odd(task):
        return EPOCH_IMAGES
    from evaluators.data import load_dataset

    return len(load_dataset(task, data_dir=data_dir).train)


def build_plans(names: list[str], args: argparse.Namespace, pool: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for name in names:
        if name == "data":
            runs += plan_data(args.probe_epochs)
        elif name == "canvas":
            runs += plan_canvas(args.probe_epochs)
        elif name == "recipe":
            runs += plan_recipe(args.probe_epochs, args.task, task_epoch_images(args))
        elif name == "budget":
            archs = budget_archs(pool)
            runs += plan_budget(args.budget_epochs, args.task, archs, smallest_archs(archs, pool),
                                task_epoch_images(args))
        elif name == "gt":
            runs += plan_gt(args.budget_epochs, args.task, list(pool)[:args.n_archs], args.n_reseed,
                            task_epoch_images(args))
        else:
            raise SystemExit(f"error: unknown plan {name!r}; choose from data, canvas, recipe, budget, gt")
    seen: set[str] = set()
    unique = []
    for r in runs:  # a run shared by two plans (same arch, data, seed, recipe) is trained once
        if run_key(r) not in seen:
            seen.add(run_key(r))
            unique.append(r)
    return unique


# =============================================================================================
# worker
# =============================================================================================
def _worker(wid: int, setup: dict[str, Any], tasks: Any, results: Any) -> None:
    """Worker loop: runs tasks from the shared queue; each dataset is loaded onto the device once."""
    try:
        gpu = groundtruth.setup_torch(setup["device"], setup["threads"])
    except Exception as e:  # reported to the main process, which stops with this message
        results.put(("fatal", wid, None, _error_text(e)))
        return
    results.put(("ready", wid, None, dict(gpu=gpu, pid=os.getpid())))
    cache: dict[str, Any] = {}
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put(("start", wid, task, None))
        try:
            results.put(("done", wid, task, _train_one(task, setup, gpu, wid, cache)))
        except Exception as e:  # recorded as a failure of this run; a later call retries it
            import torch

            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            results.put(("error", wid, task, _error_text(e)))
            if isinstance(e, RuntimeError) and "CUDA error" in str(e):
                return  # the CUDA context may be broken: this worker ends


def _train_one(task: dict[str, Any], setup: dict[str, Any], gpu: str, wid: int, cache: dict[str, Any]
               ) -> dict[str, Any]:
    from evaluators.cost import analytic_params
    from evaluators.data import load_dataset
    from evaluators.train import TrainRecipe, train
    from search_spaces import FasterViTConfig

    if task["data"] not in cache:
        cache[task["data"]] = load_dataset(task["data"], data_dir=setup["data_dir"]).to(setup["device"])
    splits = cache[task["data"]]
    recipe = TrainRecipe.from_dict(task["recipe"])
    if setup["smoke"]:
        recipe = recipe.replace(steps=4, eval_every=2, batch_size=16, val_subset=64, compile="auto")
    cfg = FasterViTConfig.from_dict(setup["archs"][task["arch"]]["config"])
    r = train(cfg, recipe, data=splits, seed=task["seed"], device=setup["device"], progress=False)
    d = r.to_dict()
    train_cfg = FasterViTConfig.from_dict(d.pop("config"))
    d["params"] = analytic_params(train_cfg)
    d["step_mode"] = r.recipe.get("step_mode")
    d["peak_lr"] = r.recipe.get("peak_lr")
    d.pop("recipe", None)
    d.update(gpu=gpu, worker=wid)
    return d


# =============================================================================================
# results file
# =============================================================================================
class Store(groundtruth.Store):
    """The results JSON: the arch pool, finished runs by key, failures and sessions (saving and failures as the
    first ground truth's)."""

    @classmethod
    def open(cls, path: Path, archs: dict[str, Any]) -> "Store":  # type: ignore[override]
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("benchmark") != BENCH:
                raise SystemExit(f"error: {path} is not a {BENCH} results file")
            return cls(path, data)
        data = dict(benchmark=BENCH, schema_version=SCHEMA_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    arch_source=str(ARCH_SOURCE.relative_to(ROOT)), archs=archs, runs={}, failures=[], sessions=[],
                    notes=["top1 in percent on the task's fixed 10k validation canvases (Fashion-MNIST test items)",
                           "epochs are nominal 40k-canvas epochs for every data size (equal steps, equal images)",
                           "runs share one GPU between worker processes: seconds and images/s are contended"])
        store = cls(path, data)
        store.save()
        return store

    def done(self, key: str) -> bool:
        return self.data["runs"].get(key, {}).get("status") in ("ok", "nan")

    def add(self, task: dict[str, Any], out: dict[str, Any]) -> None:
        self.data["runs"][run_key(task)] = dict(task, **out, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()


def load_arch_pool(smoke: bool) -> dict[str, dict[str, Any]]:
    """name -> {config (224 px), params}: the first ground truth's architectures (tiny ones for --smoke)."""
    if smoke:
        from groundtruth import smoke_archs

        tiny = smoke_archs(64)
        names = list(SMALLEST + PRESETS)
        return {names[i]: dict(config=tiny[i % len(tiny)]["config"], summary=tiny[i % len(tiny)]["summary"])
                for i in range(len(names))}
    src = json.loads(ARCH_SOURCE.read_text())
    return {a["name"]: dict(config=a["config"], summary=a["summary"], params=a.get("params"), arch_id=a["arch_id"])
            for a in src["archs"]}


# =============================================================================================
# driver
# =============================================================================================
def run_plans(args: argparse.Namespace) -> int:
    pool = load_arch_pool(args.smoke)
    out = args.out or (Path("/tmp/groundtruth2-smoke.json") if args.smoke else DEFAULT_OUT)
    if args.smoke and args.out is None and out.exists():
        out.unlink()  # the default smoke file starts afresh each time
    store = Store.open(out, pool)
    runs = build_plans(args.plans.split(","), args, pool)
    todo = [r for r in runs if not store.done(run_key(r))]
    print(f"groundtruth2: {len(runs)} runs in plans {args.plans}, {len(runs) - len(todo)} done, {len(todo)} to go "
          f"-> {out}", flush=True)
    if args.limit is not None:
        todo = todo[:args.limit]
    if args.dry_run or not todo:
        model = DurationModel(store.data["runs"].values(), store.data["archs"], args.workers)
        for r in todo:
            wall, basis = model.wall(r)
            cap = fitting_cap(r, model, args.hard_stop)
            never = ("" if cap >= args.workers else "  NEVER FITS a call (--hard-stop)" if cap == 0 else
                     f"  fits with at most {cap} run(s) on the GPU: a call starts it first and keeps {cap} in flight"
                     + ("" if basis == "arch" else " (once its architecture is measured)"))
            print(f"  {r['plan']:7s} {r['arch']:4s} {r['tag']:7s} seed {r['seed']} {r['data']}  "
                  f"~{wall:.0f} s with {args.workers} workers ({basis}){never}")
        if todo:
            print(gpu_time_estimate(todo, store.data["runs"].values(), args.workers, store.data["archs"]), flush=True)
        return 0
    device = args.device or ("cuda" if _cuda_available() else "cpu")
    setup = dict(device=device, threads=args.threads, data_dir=args.data_dir, archs=pool, smoke=args.smoke)
    session = dict(started=time.strftime("%Y-%m-%dT%H:%M:%S"), plans=args.plans, workers=args.workers, device=device,
                   finished=0, failed=0)
    store.data["sessions"].append(session)
    _drive(store, todo, setup, args, session)
    session["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    store.save()
    left = sum(not store.done(run_key(r)) for r in runs)
    print(f"groundtruth2: {session['finished']} finished, {session['failed']} failed this call; {left} left "
          f"{'(all plans done)' if left == 0 else '(run again to go on)'}", flush=True)
    return 0


#: aggregate training rate assumed for --dry-run's estimate until runs of this file measured one
#: (64 px-equivalent images per second, four workers on one H100/H200; the largest subnet of the
#: default space alone trains at 5,055 img/s in a CUDA-graph step on an H100)
ASSUMED_IMG_S = 8000.0
#: a run starts only if predicted to end this fraction before --hard-stop (predictions are rough)
FIT_MARGIN = 0.10


def pixel_images(run: dict[str, Any]) -> float:
    """Training images of ``run`` in 64 px-equivalents (cost grows with the pixels)."""
    r = run["recipe"]
    return r["steps"] * r["batch_size"] * (r["resolution"] / 64) ** 2


def _stamp(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def run_concurrency(run: dict[str, Any], others: list[dict[str, Any]]) -> Optional[float]:
    """Mean number of runs (this one included) that shared the GPU while ``run`` trained.

    The driver records it (``concurrency``) since scheduling became fit-aware; for older records it is
    rebuilt from the recorded intervals ``[finished_at - seconds, finished_at]`` of the other runs
    (runs cut at a hard stop left no record, so this may undercount: the estimate errs slow, which
    is the safe side). None when ``run`` has no ``finished_at``."""
    if run.get("concurrency"):
        return float(run["concurrency"])
    if not run.get("finished_at") or not run.get("seconds"):
        return None
    end = _stamp(run["finished_at"])
    start = end - run["seconds"]
    shared = 0.0
    for o in others:
        if o is run or not o.get("finished_at") or not o.get("seconds"):
            continue
        o_end = _stamp(o["finished_at"])
        shared += max(0.0, min(end, o_end) - max(start, o_end - o["seconds"]))
    return 1.0 + shared / run["seconds"]


class DurationModel:
    """Predicted wall seconds of a pending run in a call with ``workers`` workers, from the finished runs.

    Contention: workers time-share the GPU, so a run's recorded ``seconds`` is its solo time times the
    mean number of runs that trained beside it (``run_concurrency``). Each finished run gives a solo
    rate (solo seconds per 64 px-equivalent training image, ``pixel_images``). A pending run's solo
    seconds come from, in this order of trust:

    - ``arch``: the median solo rate of finished runs of the same architecture (and resolution, if any
      ran at it; else at any resolution, the pixels scaled);
    - ``params``: a power law ``rate = a * params**b`` fitted to the measured architectures (params of
      the arch pool; proportional scaling when one architecture is measured);
    - ``global``: all finished runs' images over their solo seconds;
    - ``assumed``: ``ASSUMED_IMG_S`` aggregate over ``workers`` when nothing is measured.

    The predicted wall time is the solo time times ``workers``: every worker busy for the whole run
    (true while runs are pending; in the tail, with workers idle, runs end sooner). That errs slow,
    which is the cheap side: a deferred run costs little GPU time, since its share of the GPU goes to
    the runs still training, while a run cut at the hard stop loses everything it trained.
    """

    def __init__(self, finished: Any, archs: dict[str, dict[str, Any]], workers: int):
        self.workers = workers
        self.archs = archs
        done = [r for r in finished if r.get("status") == "ok" and r.get("seconds")]
        self.n_measured = len(done)
        #: (arch, resolution) -> solo seconds per 64 px-equivalent image
        self.rates: dict[tuple[str, int], list[float]] = {}
        solo_total, images_total = 0.0, 0.0
        for r in done:
            conc = run_concurrency(r, done)
            solo = r["seconds"] / (conc if conc is not None else workers)  # unknown: as busy as this call
            self.rates.setdefault((r.get("arch", "?"), r["recipe"]["resolution"]), []).append(solo / pixel_images(r))
            solo_total += solo
            images_total += pixel_images(r)
        self.global_rate = solo_total / images_total if images_total else 0.0
        self.fit = self._fit_params()

    def _arch_rate(self, arch: str, resolution: Optional[int] = None) -> Optional[float]:
        xs = [v for (a, res), vs in self.rates.items() if a == arch and resolution in (None, res) for v in vs]
        return statistics.median(xs) if xs else None

    def _params(self, arch: str) -> Optional[float]:
        p = (self.archs.get(arch) or {}).get("params")
        return float(p) if p else None

    def _fit_params(self) -> Optional[tuple[float, float]]:
        pts = [(math.log(p), math.log(rate)) for a in {a for a, _ in self.rates}
               if (p := self._params(a)) and (rate := self._arch_rate(a))]
        if not pts:
            return None
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        var = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in pts) / var if var > 0 else 1.0
        return my - b * mx, b

    def solo(self, run: dict[str, Any]) -> tuple[float, str]:
        """(solo seconds, basis) of ``run``; basis is arch, params, global or assumed."""
        images = pixel_images(run)
        arch = run.get("arch", "?")
        rate = self._arch_rate(arch, run["recipe"]["resolution"]) or self._arch_rate(arch)
        if rate is not None:
            return images * rate, "arch"
        p = self._params(arch)
        if self.fit is not None and p:
            a, b = self.fit
            return images * math.exp(a + b * math.log(p)), "params"
        if self.n_measured:
            return images * self.global_rate, "global"
        return images * self.workers / ASSUMED_IMG_S, "assumed"

    def wall(self, run: dict[str, Any]) -> tuple[float, str]:
        """(predicted wall seconds with every worker busy, basis)."""
        s, basis = self.solo(run)
        return s * self.workers, basis


def choose_next(pending: list[dict[str, Any]], model: DurationModel, elapsed: float, time_budget: float,
                hard_stop: float, margin: float = FIT_MARGIN) -> tuple[Optional[int], list[tuple[int, str]]]:
    """Index in ``pending`` (priority order) of the run to start now, and the (index, reason) of the
    runs of higher priority passed over.

    A run starts only if ``elapsed + predicted * (1 + margin) <= hard_stop``. Before ``time_budget``
    any run that fits may start; after it, only runs whose duration was measured on their own
    architecture (a guessed duration is not trusted in the tail). A run passed over stays pending
    for the next call; a shorter one that fits goes instead, so the tail of a call is filled."""
    passed: list[tuple[int, str]] = []
    for i, run in enumerate(pending):
        wall, basis = model.wall(run)
        need = wall * (1 + margin)
        if elapsed + need > hard_stop:
            never = " (never fits a call with every worker busy: a call reserves it when it is the first such run)" \
                if need > hard_stop else ""
            passed.append((i, f"predicted {wall:.0f} s ({basis}) + {margin:.0%} margin ends after the hard stop "
                              f"({elapsed:.0f} + {need:.0f} > {hard_stop:.0f} s){never}"))
            continue
        if elapsed >= time_budget and basis != "arch":
            passed.append((i, f"past --time-budget {time_budget:.0f} s, only runs measured on their architecture "
                              f"start (this one's {wall:.0f} s is a {basis} estimate)"))
            continue
        return i, passed
    return None, passed


def fitting_cap(run: dict[str, Any], model: DurationModel, hard_stop: float, margin: float = FIT_MARGIN) -> int:
    """The most runs that may share the GPU with ``run`` (itself included) for it to end before
    ``hard_stop`` when started now: ``model.workers`` if it fits a full call, 0 if it does not fit
    even alone."""
    solo, _ = model.solo(run)
    return min(model.workers, int(hard_stop // (solo * (1 + margin)))) if solo > 0 else model.workers


def reserve_long_run(pending: list[dict[str, Any]], model: DurationModel, hard_stop: float,
                     margin: float = FIT_MARGIN) -> Optional[tuple[int, int]]:
    """At the start of a call: (index in ``pending``, cap) of the first run, in priority order, that
    would never fit with every worker busy but fits with at most ``cap`` runs on the GPU; the driver
    starts it first and keeps at most ``cap`` runs in flight until it ends. None if there is none.

    Only runs measured on their architecture are reserved (a guessed duration does not justify idling
    workers), and the other runs are still predicted with every worker busy, so lifting the cap when
    the reserved run ends cannot push them past the hard stop."""
    for i, run in enumerate(pending):
        if model.solo(run)[1] != "arch":
            continue
        cap = fitting_cap(run, model, hard_stop, margin)
        if 1 <= cap < model.workers:
            return i, cap
    return None


def gpu_time_estimate(todo: list[dict[str, Any]], finished: Any, workers: int,
                      archs: Optional[dict[str, dict[str, Any]]] = None) -> str:
    """One line: the runs' 64 px-equivalent images and the GPU time they take: the sum of their solo
    times (``DurationModel``: workers time-share the GPU, so W runs side by side take the sum of their
    solo times), with the aggregate rate that implies."""
    need = sum(pixel_images(r) for r in todo)
    model = DurationModel(finished, archs or {}, workers)
    solos = [model.solo(r) for r in todo]
    seconds = sum(s for s, _ in solos)
    rate = need / seconds if seconds else ASSUMED_IMG_S
    if model.n_measured:
        bases = {b: sum(1 for _, x in solos if x == b) for b in ("arch", "params", "global")}
        how = (f"{rate:,.0f} img/s with {workers} workers, from {model.n_measured} finished runs "
               f"(runs predicted by arch/params/global rate: {bases['arch']}/{bases['params']}/{bases['global']})")
    else:
        how = f"an assumed {ASSUMED_IMG_S:,.0f} img/s (nothing measured yet)"
    return f"estimate: {need / 1e6:.1f} M training images (64 px-equivalent); at {how}: ~{seconds / 60:.0f} min"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _drive(store: Store, todo: list[dict[str, Any]], setup: dict[str, Any], args: argparse.Namespace,
           session: dict[str, Any]) -> None:
    """Feed ``todo`` to the workers, each free worker getting the first run that ``choose_next`` says
    fits before ``--hard-stop``; runs that do not fit stay for the next call. Stop hard at ``--hard-stop``."""
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(w, setup, tasks, results), daemon=True) for w in range(args.workers)]
    for w in workers:
        w.start()
    t0 = time.time()
    pending = list(todo)
    told: set[str] = set()
    share = _ShareClock()

    def model() -> DurationModel:
        return DurationModel(store.data["runs"].values(), store.data["archs"], args.workers)

    def start_one(m: DurationModel) -> bool:
        i, passed = choose_next(pending, m, time.time() - t0, args.time_budget, args.hard_stop)
        for j, why in passed:
            key = run_key(pending[j])
            if key not in told:
                told.add(key)
                r = pending[j]
                print(f"[{time.time() - t0:5.0f}s] deferred to the next call: {r['plan']} {r['arch']} {r['tag']} "
                      f"seed {r['seed']}: {why}", flush=True)
        if i is None:
            return False
        tasks.put(pending.pop(i))
        return True

    in_flight = 0
    m = model()
    cap, reserved = args.workers, None
    pick = reserve_long_run(pending, m, args.hard_stop)
    if pick is not None:
        i, cap = pick
        reserved = run_key(pending[i])
        r = pending[i]
        print(f"[{time.time() - t0:5.0f}s] reserved: {r['plan']} {r['arch']} {r['tag']} seed {r['seed']} fits only "
              f"with at most {cap} run(s) on the GPU; it goes first and the call keeps {cap} in flight until it "
              "ends", flush=True)
        tasks.put(pending.pop(i))
        in_flight = 1
    while in_flight < cap and pending and start_one(m):
        in_flight += 1
    if not in_flight:
        print("groundtruth2: no run fits in this call", flush=True)
    try:
        while in_flight:
            if time.time() - t0 > args.hard_stop:
                print(f"groundtruth2: hard stop after {args.hard_stop:.0f} s; {in_flight} runs cut (not recorded)",
                      flush=True)
                break
            try:
                kind, wid, task, payload = results.get(timeout=5)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    print("groundtruth2: every worker died", flush=True)
                    break
                continue
            if kind == "fatal":
                raise SystemExit(f"error: worker {wid} could not start: {payload}")
            if kind == "ready":
                continue
            if kind == "start":
                share.start(wid, time.time())
                continue
            in_flight -= 1
            conc = share.end(wid, time.time())
            if kind == "done":
                store.add(task, dict(payload, concurrency=conc, workers=args.workers))
                session["finished"] += 1
                print(f"[{time.time() - t0:5.0f}s] {task['plan']:7s} {task['arch']:4s} {task['tag']:7s} "
                      f"seed {task['seed']}: top-1 {payload.get('top1')} ({payload.get('status')}, "
                      f"{payload.get('seconds', 0):.0f} s, {payload.get('images_per_s', 0):.0f} img/s, "
                      f"{conc or 0:.1f} runs on the GPU)", flush=True)
            else:
                store.fail(task, payload, wid)
                session["failed"] += 1
                print(f"[{time.time() - t0:5.0f}s] {task['plan']} {task['arch']} {task['tag']} FAILED: {payload}",
                      flush=True)
            if run_key(task) == reserved:
                cap, reserved = args.workers, None
            m = model()
            while in_flight < cap and pending and start_one(m):
                in_flight += 1
    finally:
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
    if pending:
        print(f"groundtruth2: {len(pending)} run(s) not started in this call (they stay for the next)", flush=True)


class _ShareClock:
    """Mean number of runs training at once over each run's life (the ``concurrency`` of its record)."""

    def __init__(self) -> None:
        self.area: dict[int, float] = {}
        self.since: dict[int, float] = {}
        self.last = 0.0

    def _advance(self, now: float) -> None:
        for w in self.area:
            self.area[w] += (now - self.last) * len(self.area)
        self.last = now

    def start(self, wid: int, now: float) -> None:
        self._advance(now)
        self.area[wid], self.since[wid] = 0.0, now

    def end(self, wid: int, now: float) -> Optional[float]:
        if wid not in self.area:
            return None
        self._advance(now)
        area, since = self.area.pop(wid), self.since.pop(wid)
        return round(area / (now - since), 3) if now > since else 1.0


# =============================================================================================
# analysis
# =============================================================================================
def collapsed(history: list[list[float]]) -> bool:
    """Top-1 fell by more than ``COLLAPSE_DROP`` points between two evaluations and never got back
    to within ``COLLAPSE_DROP`` of the earlier value."""
    acc = [a for _, a in history if a is not None]
    for i in range(1, len(acc)):
        if acc[i - 1] - acc[i] > COLLAPSE_DROP and max(acc[i:]) < acc[i - 1] - COLLAPSE_DROP:
            return True
    return False


def largest_swing(history: list[list[float]]) -> float:
    """The largest fall of top-1 between two consecutive evaluations (points; 0 when it only rose)."""
    acc = [a for _, a in history if a is not None]
    return max([acc[i - 1] - acc[i] for i in range(1, len(acc))] + [0.0])


#: a fall between two evaluations that the issue calls a swing ("no epoch-to-epoch swings of tens of points")
SWING_POINTS = 10.0


def swing_summary(runs: list[dict[str, Any]], threshold: float = SWING_POINTS) -> dict[str, Any]:
    """How unstable the recipe still is: runs whose top-1 fell by ``threshold`` points or more between two
    evaluations (and recovered or not), and the largest such fall with its run."""
    falls = sorted(((largest_swing(r["top1_history"]), r) for r in runs), key=lambda x: -x[0])
    worst = [dict(plan=r["plan"], arch=r["arch"], tag=r.get("tag", ""), seed=r["seed"], points=round(f, 2))
             for f, r in falls[:3] if f > 0]
    return dict(threshold=threshold, runs=len(runs), runs_at_or_over=sum(f >= threshold for f, _ in falls),
                largest=worst)


def kendall(a: list[float], b: list[float]) -> Optional[float]:
    if len(a) < 3:
        return None
    from scipy.stats import kendalltau

    t = kendalltau(a, b).statistic
    return None if t is None or not math.isfinite(t) else round(float(t), 4)


def spearman(a: list[float], b: list[float]) -> Optional[float]:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:  # undefined on a constant input
        return None
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return None if r is None or not math.isfinite(r) else round(float(r), 4)


PLAN_NAMES = ("data", "canvas", "recipe", "budget", "gt")


def plan_members(args: argparse.Namespace, pool: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every plan's runs as ``build_plans`` makes them from the same arguments, each plan whole (a run
    shared by two plans is in both, with each plan's ``plan`` and ``tag``). The recipe plan also holds
    its base: the base recipe on ``--task``, seed 0, at the probe epochs, tagged ``base``. The gt plan
    also holds a seed-1 twin of each of its archs it does not re-seed itself: another plan may have
    trained it (the data plan's second seed on the stream), and then it counts as a second seed here."""
    members = {name: build_plans([name], args, pool) for name in PLAN_NAMES}
    base = recipe_dict(args.probe_epochs, task_epoch_images(args))
    members["recipe"] = [_run("recipe", a, args.task, 0, base, "base") for a in RECIPE_ARCHS] + members["recipe"]
    gt_keys = {run_key(r) for r in members["gt"]}
    twins = [dict(r, seed=1) for r in members["gt"] if r["seed"] == 0]
    members["gt"] += [r for r in twins if run_key(r) not in gt_keys]
    return members


def finished_by_plan(data: dict[str, Any], args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Per plan, its finished runs (with a top-1), looked up by ``run_key``: the stored record with this
    plan's ``plan`` and ``tag`` (the stored labels are those of the first plan that trained the run)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, runs in plan_members(args, data["archs"]).items():
        recs = [(r, data["runs"].get(run_key(r))) for r in runs]
        out[name] = [dict(rec, plan=r["plan"], tag=r["tag"]) for r, rec in recs
                     if rec is not None and rec.get("top1") is not None]
    return out


def _runs(runs: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in runs if all(r.get(k) == v for k, v in match.items()) and r.get("top1") is not None]


def _by_arch(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        out.setdefault(r["arch"], []).append(r["top1"])
    return out


def seed_sd(by_arch: dict[str, list[float]]) -> Optional[float]:
    """Pooled seed-to-seed standard deviation over archs with >= 2 seeds."""
    pairs = [v for v in by_arch.values() if len(v) >= 2]
    return round(statistics.fmean(statistics.variance(v) for v in pairs) ** 0.5, 3) if pairs else None


def data_table(plans: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per data variant: top-1 (seed 0) of each arch, tau(params, top-1), spread sd."""
    rows = []
    for plan, tag in (("data", "40k"), ("data", "160k"), ("data", "stream"), ("canvas", "128px")):
        runs = [r for r in _runs(plans.get(plan, []), tag=tag) if r["seed"] == 0]
        if not runs:
            continue
        top1 = {r["arch"]: r["top1"] for r in runs}
        params = {r["arch"]: r["params"] for r in runs}
        archs = sorted(top1)
        sd = seed_sd(_by_arch(_runs(plans.get(plan, []), tag=tag)))
        rows.append(dict(variant=tag, data=runs[0]["data"], train_images=_train_images(runs[0]["data"]),
                         top1=top1, size_tau_params=kendall([params[a] for a in archs], [top1[a] for a in archs]),
                         spread_sd=round(statistics.stdev(top1.values()), 3) if len(top1) > 1 else None,
                         seed_sd=sd, collapsed=sum(collapsed(r["top1_history"]) for r in runs),
                         largest_swing=round(max(largest_swing(r["top1_history"]) for r in runs), 2),
                         seconds=round(sum(r["seconds"] for r in runs), 1)))
    return rows


def _train_images(data: str, data_dir: Optional[str] = None) -> Any:
    """Training images of a task: "on-the-fly" for a stream, N for fmnist-odd's ``train=N``, else an epoch."""
    if "train=stream" in data:
        return "on-the-fly"
    if is_fmnist_odd(data) and "train=" in data:
        return int(data.split("train=")[1].split(",")[0])
    return _epoch_images(data, data_dir)


def recipe_table(plans: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per recipe (``base``, then each of ``RECIPE_VARIANTS``): top-1, largest swing and collapse of
    FasterViT-2/3 and the smallest net (seed 0)."""
    rows = []
    for variant in ("base", *RECIPE_VARIANTS):
        runs = [r for r in _runs(plans.get("recipe", []), tag=variant) if r["seed"] == 0]
        if not runs:
            continue
        rows.append(dict(variant=variant, changes=RECIPE_VARIANTS.get(variant, {}),
                         top1={r["arch"]: r["top1"] for r in runs},
                         largest_swing={r["arch"]: round(largest_swing(r["top1_history"]), 2) for r in runs},
                         collapsed={r["arch"]: collapsed(r["top1_history"]) for r in runs}))
    return rows


BUDGETS = tuple(BUDGET_FACTOR)


def budget_table(plans: dict[str, list[dict[str, Any]]], data: dict[str, Any]) -> dict[str, Any]:
    """Per budget of the budget plan: top-1 per arch (seed 0), tau(params, top-1), and the seed sd
    where a seed-1 twin of a run (same arch, data, recipe) is in the results file; tau between budgets."""
    per: dict[str, Any] = {}
    top1: dict[str, dict[str, float]] = {}
    params = {r["arch"]: r["params"] for r in plans.get("budget", [])}
    for tag in BUDGETS:
        runs = [r for r in _runs(plans.get("budget", []), tag=tag) if r["seed"] == 0]
        top1[tag] = {r["arch"]: r["top1"] for r in runs}
        twins = {r["arch"]: data["runs"].get(run_key(dict(r, seed=1))) for r in runs}
        pairs = {a: [top1[tag][a], t["top1"]] for a, t in twins.items() if t and t.get("top1") is not None}
        archs = sorted(top1[tag])
        per[tag] = dict(top1=top1[tag], n=len(runs),
                        size_tau_params=kendall([params[a] for a in archs], [top1[tag][a] for a in archs]),
                        seed_sd=seed_sd(pairs), n_seed_pairs=len(pairs),
                        collapsed=sum(collapsed(r["top1_history"]) for r in runs))

    def tau(x: str, y: str) -> dict[str, Any]:
        """Rank agreement of two budgets on the archs run at both, and how the spread, the size
        trend and each arch's top-1 move between them (does capacity show more with budget?)."""
        common = sorted(set(top1[x]) & set(top1[y]))
        a, b = [top1[x][k] for k in common], [top1[y][k] for k in common]
        size = [params[k] for k in common]
        gain = [v - u for u, v in zip(a, b)]
        moved = dict(spread_sd=[round(statistics.stdev(a), 3), round(statistics.stdev(b), 3)],
                     size_tau_params=[kendall(size, a), kendall(size, b)],
                     gain=[round(min(gain), 2), round(max(gain), 2)]) if len(common) >= 2 else {}
        return dict(kendall_tau=kendall(a, b), n=len(common), **moved)

    return dict(budgets=per, tau=dict(quarter_vs_E=tau("E/4", "E"), E_vs_2E=tau("E", "2E"),
                                      quarter_vs_2E=tau("E/4", "2E")))


#: a gap between two presets' mean top-1 is beyond seed noise when it exceeds this many standard errors
NOISE_Z = 1.96


def presets_order(by_arch: dict[str, list[float]], sd: Optional[float]) -> dict[str, Any]:
    """Does the paper's order FV-0 < 1 < 2 < 3 hold on the mean top-1, and is every step of it larger
    than ``NOISE_Z`` standard errors of the difference (pooled seed sd, the presets' seed counts)?"""
    have = [a for a in PRESETS if a in by_arch]
    means = {a: round(statistics.fmean(by_arch[a]), 3) for a in have}
    if len(have) < len(PRESETS):
        return dict(mean_top1={_name(a): v for a, v in means.items()}, paper_order=None, beyond_noise=None,
                    note=f"only {len(have)} of the 4 presets trained")
    steps = list(zip(PRESETS, PRESETS[1:]))
    holds = all(means[b] > means[a] for a, b in steps)
    gaps = {f"{_name(a)} -> {_name(b)}": round(means[b] - means[a], 3) for a, b in steps}
    if sd is None:
        beyond = None
        note = "no seed sd yet: noise unknown"
    else:
        se = {f"{_name(a)} -> {_name(b)}": sd * (1 / len(by_arch[a]) + 1 / len(by_arch[b])) ** 0.5 for a, b in steps}
        beyond = holds and all(gaps[k] > NOISE_Z * se[k] for k in gaps)
        note = f"each step's gap against {NOISE_Z} x seed sd x sqrt(1/n_a + 1/n_b)"
    return dict(mean_top1={_name(a): v for a, v in means.items()}, steps=gaps, paper_order=holds,
                beyond_noise=beyond, note=note)


def gt_table(plans: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The gt plan: size, seed agreement, spread against seed noise, the presets' order."""
    by_arch = _by_arch(plans.get("gt", []))
    reseeded = {a: v for a, v in by_arch.items() if len(v) >= 2}
    sd = seed_sd(by_arch)
    first = [statistics.fmean(v) for v in by_arch.values()]
    spread = round(statistics.stdev(first), 3) if len(first) > 1 else None
    return dict(n_archs=len(by_arch), n_reseeded=len(reseeded),
                seed_kendall_tau=kendall([v[0] for v in reseeded.values()], [v[1] for v in reseeded.values()]),
                spread_sd_of_means=spread, seed_sd=sd,
                spread_over_seed_sd=round(spread / sd, 2) if spread and sd else None, target_spread_over_seed_sd=4.0,
                presets=presets_order(by_arch, sd))


#: ``first_gt_scores``' name of the first ground truth's 4-epoch top-1 (a short training, not a zero-cost proxy)
FIRST_GT_TOP1 = "top1_4ep_first_gt"


def first_gt_scores(archs: Any, pool: dict[str, dict[str, Any]], source: Path = ARCH_SOURCE
                    ) -> tuple[dict[str, dict[str, float]], dict[str, Optional[str]]]:
    """The first ground truth's scores of ``archs`` (names): per score, arch -> value, for every zero-cost proxy
    record of ``source`` (``params``/``flops`` included; finite values only) and its 4-epoch top-1 (``full`` runs
    of its seed, as ``FIRST_GT_TOP1``); and the first ground truth's arch_id each name was looked up by (its
    ``archs``' entry of that name, else the pool's ``arch_id``)."""
    old = json.loads(Path(source).read_text())
    ids = {a["name"]: a["arch_id"] for a in old["archs"]}
    seed = old.get("settings", {}).get("seed", 0)
    old_top1 = {r["arch_id"]: r["top1"] for r in old["runs"]
                if r.get("kind") == "full" and r.get("seed") == seed and r.get("top1") is not None}
    scores: dict[str, dict[str, float]] = {}
    used: dict[str, Optional[str]] = {}
    for arch in archs:
        i = used[arch] = ids.get(arch, (pool.get(arch) or {}).get("arch_id"))
        for name, v in ((old.get("proxies") or {}).get(i) or {}).get("values", {}).items():
            if v.get("value") is not None and math.isfinite(v["value"]):
                scores.setdefault(name, {})[arch] = v["value"]
        if i in old_top1:
            scores.setdefault(FIRST_GT_TOP1, {})[arch] = old_top1[i]
    return scores, used


def proxies_tau(plans: dict[str, list[dict[str, Any]]], pool: dict[str, dict[str, Any]],
                source: Path = ARCH_SOURCE) -> dict[str, Any]:
    """Kendall tau and Spearman rho against the gt plan's mean top-1 (over seeds) of every zero-cost
    proxy of the first ground truth (``source``: its ``proxies`` records, higher = better), of its
    params and FLOPs (proxy records ``params``/``flops``), and of its 4-epoch top-1 (``full`` runs of its
    seed), over the architectures present in both; ``n`` per row."""
    gt = {a: statistics.fmean(v) for a, v in _by_arch(plans.get("gt", [])).items()}
    if not gt:
        return dict(n_gt_archs=0, rows={}, source=str(source.name),
                    note="no gt-plan run finished yet: nothing to rank the proxies against")
    scores, _ = first_gt_scores(gt, pool, source)
    rows = {}
    for name, s in scores.items():
        archs = sorted(s)
        x, y = [s[a] for a in archs], [gt[a] for a in archs]
        rows[name] = dict(kendall_tau=kendall(x, y), spearman=spearman(x, y), n=len(archs))
    rows = dict(sorted(rows.items(), key=lambda kv: -(kv[1]["kendall_tau"] if kv[1]["kendall_tau"] is not None
                                                      else -9)))
    return dict(n_gt_archs=len(gt), rows=rows, source=str(source.name),
                note="against the gt plan's mean top-1 over seeds; proxies as recorded by bench/groundtruth.py "
                     "(higher = better); top1_4ep_first_gt is the first ground truth's 4-epoch top-1")


def chosen_task(args: argparse.Namespace) -> dict[str, Any]:
    """The budget/gt plans' task from the arguments: dataset, training images, E, the full recipe."""
    return dict(dataset=args.task, train_images=_train_images(args.task, getattr(args, "data_dir", None)),
                epochs=args.budget_epochs, recipe=recipe_dict(args.budget_epochs, task_epoch_images(args)))


def summarize(data: dict[str, Any], args: Optional[argparse.Namespace] = None) -> dict[str, Any]:
    """The issue's summary keys (None where that part of the experiment has not run yet), plus the
    recipe, budget, gt and proxy tables. Runs are selected by plan membership (``finished_by_plan``)
    with the plans rebuilt from ``args`` (the CLI's defaults when None)."""
    args = args if args is not None else parse_args([])
    plans = finished_by_plan(data, args)
    runs = [r for r in data["runs"].values() if r.get("top1") is not None]
    gpus = sorted({r["gpu"] for r in runs})
    sweep = data_table(plans)
    gt = plans["gt"]
    gt_by_arch = _by_arch(gt)
    budget = budget_table(plans, data)
    gtt = gt_table(plans)
    chosen = chosen_task(args)
    reseeded = {a: v for a, v in gt_by_arch.items() if len(v) >= 2}
    presets = {a: v for a, v in gt_by_arch.items() if a in PRESETS}
    gt_params = {r["arch"]: r["params"] for r in gt if r["seed"] == 0}
    gt_top1 = {a: v[0] for a, v in gt_by_arch.items()}
    common = sorted(set(gt_params) & set(gt_top1))
    return dict(
        gpu=", ".join(gpus), dataset=chosen["dataset"], train_images=chosen["train_images"],
        epochs=chosen["epochs"], recipe=chosen["recipe"],
        budget_tau=dict(quarter_vs_E=budget["tau"]["quarter_vs_E"]["kendall_tau"],
                        E_vs_2E=budget["tau"]["E_vs_2E"]["kendall_tau"]),
        presets_top1={_PRESET_FULL[a]: v for a, v in sorted(presets.items())},
        data_sweep=[dict(train_images=row["train_images"], top1={_name(a): v for a, v in row["top1"].items()},
                         variant=row["variant"]) for row in sweep],
        n_archs=len(gt_by_arch), n_reseeded=len(reseeded),
        seed_kendall_tau=kendall([v[0] for v in reseeded.values()], [v[1] for v in reseeded.values()]),
        spread_sd=round(statistics.stdev(gt_top1.values()), 3) if len(gt_top1) > 1 else None,
        seed_sd=seed_sd(gt_by_arch),
        size_tau_params=kendall([gt_params[a] for a in common], [gt_top1[a] for a in common]),
        collapsed_runs=sum(collapsed(r["top1_history"]) for r in runs),
        swings=swing_summary(runs),
        status=("complete" if gt_by_arch and len(gt_by_arch) >= 30 else
                f"in progress: {len(runs)} run(s) recorded, {len(gt_by_arch)} ground-truth architecture(s) of the "
                f"gt plan (see groundtruth2.json; --dry-run lists what is left)"),
        probes=sweep, recipe_probes=recipe_table(plans), budget=budget, gt=gtt,
        proxies_tau=proxies_tau(plans, data["archs"], args.arch_source or ARCH_SOURCE),
        plan_args=dict(task=args.task, probe_epochs=args.probe_epochs, budget_epochs=args.budget_epochs,
                       n_archs=args.n_archs, n_reseed=args.n_reseed),
    )


_PRESET_FULL = {"fv0": "faster_vit_0", "fv1": "faster_vit_1", "fv2": "faster_vit_2", "fv3": "faster_vit_3"}


def _name(arch: str) -> str:
    return _PRESET_FULL.get(arch, arch)


def _short(arch: str) -> str:
    return _name(arch).replace("faster_vit_", "FasterViT-")


def markdown(summary: dict[str, Any]) -> str:
    """README tables: the data/canvas probes, the recipe probes, the budgets, the ground truth, the proxies."""
    return "\n\n".join([probes_markdown(summary), stability_markdown(summary), recipe_markdown(summary),
                        budget_markdown(summary), gt_markdown(summary), proxies_markdown(summary)])


def stability_markdown(summary: dict[str, Any]) -> str:
    """One line: collapsed runs, runs with a swing, the largest swings."""
    w = summary.get("swings") or {}
    if not w.get("runs"):
        return "Stability: no run finished yet."
    worst = "; ".join(f"{_short(x['arch'])} ({x['plan']} {x['tag']}, seed {x['seed']}) {x['points']:.1f}"
                      for x in w["largest"])
    recovered = " and recovered" if summary["collapsed_runs"] == 0 else ""
    largest = f" (largest falls: {worst})" if worst else ""
    return (f"Stability over {w['runs']} runs: {summary['collapsed_runs']} collapsed; {w['runs_at_or_over']} fell by "
            f"≥ {w['threshold']:g} points between two evaluations{recovered}{largest}")


def probes_markdown(summary: dict[str, Any]) -> str:
    """Top-1 per arch and data variant, tau, spread, seed sd."""
    rows = summary["probes"]
    if not rows:
        return "Data probes: none finished yet (the `data` and `canvas` plans)."
    archs = [a for a in SMALLEST + PRESETS if any(a in r["top1"] for r in rows)]
    head = "| variant | train images | " + " | ".join(_name(a) for a in archs) + \
        " | τ(params, top-1) | spread sd | seed sd | collapsed |"
    rule = "|---|---|" + "---:|" * len(archs) + "---:|---:|---:|---:|"
    lines = [head, rule]
    for r in rows:
        cells = [f"{r['top1'][a]:.2f}" if a in r["top1"] else "–" for a in archs]
        lines.append(f"| {r['variant']} | {r['train_images']} | " + " | ".join(cells) +
                     f" | {_fmt(r['size_tau_params'])} | {_fmt(r['spread_sd'])} | {_fmt(r['seed_sd'])} | "
                     f"{r['collapsed']} |")
    return "\n".join(lines)


def recipe_markdown(summary: dict[str, Any]) -> str:
    """Top-1 / largest swing (collapsed marked) per recipe variant and arch."""
    rows = summary.get("recipe_probes") or []
    if not rows:
        return "Recipe probes: none finished yet."
    head = "| recipe | " + " | ".join(_name(a) for a in RECIPE_ARCHS) + " |"
    lines = ["Recipe probes: top-1 (largest fall between two evaluations)", "", head,
             "|---|" + "---:|" * len(RECIPE_ARCHS)]
    for r in rows:
        cells = [(f"{r['top1'][a]:.2f} ({r['largest_swing'][a]:.1f})" + (" collapsed" if r["collapsed"][a] else ""))
                 if a in r["top1"] else "–" for a in RECIPE_ARCHS]
        name = r["variant"] + (" " + ", ".join(f"{k}={v}" for k, v in r["changes"].items()) if r["changes"] else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_markdown(summary: dict[str, Any]) -> str:
    b = summary.get("budget") or {}
    per = b.get("budgets") or {}
    archs = sorted({a for v in per.values() for a in v["top1"]}, key=lambda a: (a not in PRESETS, a))
    if not archs:
        return "Budgets: no budget-plan run finished yet."
    lines = ["| budget | " + " | ".join(_name(a) for a in archs) + " | τ(params, top-1) | seed sd |",
             "|---|" + "---:|" * (len(archs) + 2)]
    for tag in BUDGETS:
        v = per[tag]
        cells = [f"{v['top1'][a]:.2f}" if a in v["top1"] else "–" for a in archs]
        lines.append(f"| {tag} | " + " | ".join(cells) + f" | {_fmt(v['size_tau_params'])} | {_fmt(v['seed_sd'])} |")
    t = b["tau"]
    lines += ["", "τ between budgets: " + ", ".join(f"{k} {_fmt(x['kendall_tau'])} (n={x['n']})"
                                                   for k, x in t.items())]
    moved = [f"- {k}, on the {x['n']} archs run at both: spread sd {_fmt(x['spread_sd'][0])} → "
             f"{_fmt(x['spread_sd'][1])}, τ(params, top-1) {_fmt(x['size_tau_params'][0])} → "
             f"{_fmt(x['size_tau_params'][1])}, top-1 gain {x['gain'][0]:+.2f} to {x['gain'][1]:+.2f}"
             for k, x in t.items() if "gain" in x]
    return "\n".join(lines + ([""] + moved if moved else []))


def gt_markdown(summary: dict[str, Any]) -> str:
    g = summary.get("gt") or {}
    if not g.get("n_archs"):
        return "Ground truth (gt plan): no run finished yet."
    p = g["presets"]
    if p["paper_order"] is None:
        order = "n/a (" + p["note"] + ")"
    elif not p["paper_order"]:
        order = "does not hold"
    else:
        order = "holds, " + {None: "seed noise unknown", True: "beyond seed noise", False: "within seed noise"}[
            p["beyond_noise"]]
    means = ", ".join(f"{k} {v:.2f}" for k, v in p["mean_top1"].items()) or "–"
    return "\n".join([
        "| archs | reseeded | seed τ | spread sd | seed sd | spread / seed sd (target ≥ 4) | presets' mean top-1 | "
        "FV-0 < 1 < 2 < 3 |", "|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {g['n_archs']} | {g['n_reseeded']} | {_fmt(g['seed_kendall_tau'])} | {_fmt(g['spread_sd_of_means'])} | "
        f"{_fmt(g['seed_sd'])} | {_fmt(g['spread_over_seed_sd'])} | {means} | {order} |"])


def proxies_markdown(summary: dict[str, Any]) -> str:
    p = summary.get("proxies_tau") or {}
    if not p.get("rows"):
        return f"Proxies against the new ground truth: {p.get('note', 'not computed')}."
    lines = [f"Proxies against the new ground truth ({p['n_gt_archs']} archs of the gt plan)", "",
             "| proxy | Kendall τ | Spearman ρ | n |", "|---|---:|---:|---:|"]
    for name, r in p["rows"].items():
        lines.append(f"| {name} | {_fmt(r['kendall_tau'])} | {_fmt(r['spearman'])} | {r['n']} |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}"


#: the shipped throughput predictor whose images/s the exported ground truth carries (``evaluators.predictor``)
TRUTH_PREDICTOR = "h100"
#: the exported ground truth's short-training baseline: the budget plan's E/4 top-1 (issue #30's ``train@f``)
SHORT_TRAINING = "train@E/4"


def stand_alone_truth(data: dict[str, Any], args: Optional[argparse.Namespace] = None, *,
                      num_classes: Optional[int] = None) -> dict[str, Any]:
    """The ``gt`` plan as ``bench/supernet.py`` reads a ground truth (``--groundtruth``).

    ``archs``: per architecture its config (224 px as deployed: the supernet moves it to its training
    resolution), the mean top-1 over seeds, ``params`` and ``flops`` of the config as trained (the recipe's
    resolution, the task's classes: as the runs' recorded ``params``, checked equal), and ``throughput``:
    images/s of the 224-px config PREDICTED for the GPU of ``TRUTH_PREDICTOR`` (``throughput_source`` says
    which predictor, GPU and protocol; ``throughput_outside_range`` names what it extrapolates).
    ``proxies`` (``{arch_id: {"values": {name: {"value": v}}}}``): the first ground truth's zero-cost proxy
    scores (``first_gt_scores``; params/FLOPs are the archs' own) and ``SHORT_TRAINING``, the budget plan's
    E/4 top-1 (seed 0) where it has one. ``num_classes``: the task's (None: loaded from ``args.task``)."""
    from evaluators.cost import analytic_flops, analytic_params
    from evaluators.predictor import load_predictor
    from search_spaces import FasterViTConfig

    args = args if args is not None else parse_args([])
    plans = finished_by_plan(data, args)
    by_arch = _by_arch(plans["gt"])
    recorded = {r["arch"]: r.get("params") for r in plans["gt"]}
    resolution = int(recipe_dict(args.budget_epochs)["resolution"])
    if num_classes is None:
        from evaluators.data import load_dataset

        num_classes = load_dataset(args.task, data_dir=getattr(args, "data_dir", None)).num_classes
    predictor = load_predictor(TRUTH_PREDICTOR)
    cfgs = {a: FasterViTConfig.from_dict(data["archs"][a]["config"]) for a in by_arch}
    predicted = dict(zip(cfgs, predictor.predict_many(list(cfgs.values()))))
    first, first_ids = first_gt_scores(by_arch, data["archs"], getattr(args, "arch_source", None) or ARCH_SOURCE)
    short = {r["arch"]: r["top1"] for r in _runs(plans.get("budget", []), tag="E/4") if r["seed"] == 0}
    archs, proxies = [], {}
    for a, top1s in by_arch.items():
        cfg = cfgs[a]
        trained = cfg.at_resolution(resolution).replace(num_classes=num_classes)
        params = analytic_params(trained)
        if recorded.get(a) is not None and recorded[a] != params:
            raise ValueError(f"{a}: the gt runs recorded params {recorded[a]}, but its config at {resolution} px with "
                             f"{num_classes} classes has {params}: the export would not describe what was trained")
        if first_ids.get(a) is not None and first_ids[a] != cfg.arch_id:
            raise ValueError(f"{a}: the first ground truth's arch_id {first_ids[a]} is not its config's "
                             f"{cfg.arch_id}: its proxy scores belong to another architecture")
        row = dict(arch_id=cfg.arch_id, name=a, config=data["archs"][a]["config"],
                   top1=round(statistics.fmean(top1s), 3), seeds=len(top1s), params=params,
                   flops=analytic_flops(trained), throughput=predicted[a]["images_per_s"])
        outside = predictor.outside_range(cfg)
        if outside:
            row["throughput_outside_range"] = outside
        archs.append(row)
        values = {name: dict(value=v[a]) for name, v in first.items()
                  if a in v and name not in ("params", "flops", FIRST_GT_TOP1)}
        if a in short:
            values[SHORT_TRAINING] = dict(value=short[a])
        if values:
            proxies[cfg.arch_id] = dict(values=values)
    m = predictor.meta
    return dict(archs=archs, proxies=proxies, source="bench/groundtruth2.py (plan gt)", task=args.task,
                size_at=dict(resolution=resolution, num_classes=num_classes,
                             note="params and flops of each config as trained (as the gt runs' recorded params)"),
                throughput_source=dict(kind="predicted", predictor=predictor.name, gpu=predictor.gpu,
                                       resolution=sorted({c.resolution[0] for c in cfgs.values()}),
                                       mode=m.get("mode"), dtype=m.get("dtype"), batch_size=m.get("batch_size"),
                                       describe=predictor.describe()),
                proxies_source=dict(zero_cost=str(getattr(args, "arch_source", None) or ARCH_SOURCE.relative_to(ROOT)),
                                    short_training=f"{SHORT_TRAINING}: the budget plan's E/4 top-1, seed 0"))


# =============================================================================================
# figure
# =============================================================================================
#: the task's Bayes ceilings (results/benchmarks/odd-ceiling.json: a 92.8 % item classifier's posteriors)
CEILING = ROOT / "results" / "benchmarks" / "odd-ceiling.json"


def _ceiling(items: int = 3) -> Optional[float]:
    if not CEILING.is_file():
        return None
    rows = json.loads(CEILING.read_text()).get("ceilings", [])
    return next((float(r["odd_top1_bayes"]) for r in rows if r.get("items") == items), None)


def history_epochs(run: dict[str, Any]) -> list[tuple[float, float]]:
    """A run's top-1 history against epochs: the run's own epochs per step where it recorded them, else
    nominal ones (step x batch / 40k)."""
    if run.get("epochs") and run.get("steps"):
        per_step = float(run["epochs"]) / int(run["steps"])
    else:
        per_step = int(run.get("recipe", {}).get("batch_size", BASE_RECIPE["batch_size"])) / EPOCH_IMAGES
    return [(step * per_step, top1) for step, top1 in run["top1_history"]]


def budget_lines(plans: dict[str, list[dict[str, Any]]], epochs: float) -> dict[str, list[tuple[float, float]]]:
    """Per arch of the budget plan: (epochs, top-1 of seed 0) at each budget it has finished."""
    out: dict[str, list[tuple[float, float]]] = {}
    for tag in BUDGETS:
        for r in _runs(plans.get("budget", []), tag=tag, seed=0):
            out.setdefault(r["arch"], []).append((epochs * BUDGET_FACTOR[tag], r["top1"]))
    return {a: sorted(v) for a, v in out.items()}


def plot(data: dict[str, Any], args: argparse.Namespace, path: Path) -> Optional[Path]:
    """The curves behind the tables. Left: top-1 against budget (E/4, E, 2E) per arch of the budget plan,
    coloured by params, with the task's ceiling. Middle: top-1 histories of FasterViT-0..3 and the two
    smallest nets at E and 2E (seed 0). Right: the gt plan's mean top-1 against params, the seed range
    of the re-seeded archs as bars, the presets named."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import cm, colors
    except ImportError:
        print("note: matplotlib is not installed: no figure", flush=True)
        return None
    plans = finished_by_plan(data, args)
    params = {r["arch"]: r["params"] for runs in plans.values() for r in runs if r.get("params")}
    if not params:
        print("note: no finished run: no figure", flush=True)
        return None
    norm = colors.LogNorm(vmin=min(params.values()), vmax=max(params.values()))
    cmap = matplotlib.colormaps["viridis"]
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(18, 5.5))
    odd = is_fmnist_odd(args.task)
    ceiling = _ceiling() if odd else None  # the Bayes ceiling is fmnist-odd's (3 items), not a user's folder's
    unit = "nominal epochs (40k images each)" if odd else "epochs"
    for a, pts in budget_lines(plans, args.budget_epochs).items():
        named = a in PRESETS + SMALLEST
        ax.plot(*zip(*pts), "o-", color=cmap(norm(params.get(a, 1.0))), lw=2.2 if named else 1.0, ms=4)
        if named:
            ax.annotate(_short(a), pts[-1], textcoords="offset points", xytext=(4, 0), fontsize=7)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="params")
    budgets = [args.budget_epochs * BUDGET_FACTOR[t] for t in BUDGETS]
    ax.set(xscale="log", xlabel=unit, ylabel="top-1 % (seed 0)",
           title=f"budget plan on {args.task}: E/4, E, 2E")
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.minorticks_off()
    styles = {"E": "-", "2E": "--"}
    for tag, style in styles.items():
        for r in _runs(plans.get("budget", []), tag=tag, seed=0):
            if r["arch"] in PRESETS + SMALLEST:
                bx.plot(*zip(*history_epochs(r)), style, color=cmap(norm(params.get(r["arch"], 1.0))), lw=1.2,
                        label=f"{_short(r['arch'])} at {tag}")
    bx.set(xlabel=unit, ylabel="top-1 % (validation)", title="curves of FasterViT-0..3 and the smallest nets "
           "(solid E, dashed 2E)")
    if odd:
        bx.set_ylim(40, 92)  # the first epochs' 10-40 % would squeeze the part where the curves differ
    gt = _by_arch(plans.get("gt", []))
    for a, v in gt.items():
        mean = statistics.fmean(v)
        preset = a in PRESETS
        cx.errorbar([params.get(a, 1.0)], [mean], yerr=[[mean - min(v)], [max(v) - mean]] if len(v) > 1 else None,
                    fmt="s" if preset else "o", color="black" if preset else cmap(norm(params.get(a, 1.0))),
                    ms=6 if preset else 4, capsize=2)
        if preset:
            cx.annotate(_short(a), (params.get(a, 1.0), mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    cx.set(xscale="log", xlabel="params", ylabel="top-1 % (mean over seeds; bar: seed range)",
           title=f"gt plan at E = {args.budget_epochs:g}: {len(gt)} archs")
    for a in (ax, bx, cx):
        if ceiling is not None:
            a.axhline(ceiling, color="grey", ls=":", lw=1)
        a.grid(alpha=0.3)
    if ceiling is not None:
        ax.plot([], [], ":", color="grey", label=f"task ceiling {ceiling:g} % (odd_ceiling.py)")
        ax.legend(fontsize=8, loc="lower right")
    if bx.get_legend_handles_labels()[0]:
        bx.legend(fontsize=7, ncol=2, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def analyze(args: argparse.Namespace) -> int:
    path = args.out or DEFAULT_OUT
    data = json.loads(path.read_text())
    summary = summarize(data, args)
    out = args.summary_out or SUMMARY
    write_json(out, summary)
    if args.export_truth is not None:
        write_json(args.export_truth, stand_alone_truth(data, args))
        print(f"-> {args.export_truth} (stand-alone top-1 of the gt plan, for bench/supernet.py --groundtruth)")
    print(markdown(summary))
    print(f"-> {out}")
    figure = plot(data, args, out.with_suffix(".png"))
    if figure is not None:
        print(f"-> {figure}")
    return 0


# =============================================================================================
# CLI
# =============================================================================================
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--plans", default="data", help="comma list of data, canvas, recipe, budget, gt (priority order)")
    p.add_argument("--out", type=Path, default=None, help=f"results JSON [{DEFAULT_OUT.relative_to(ROOT)}]")
    p.add_argument("--summary-out", type=Path, default=None, help=f"[{SUMMARY.relative_to(ROOT)}]")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--task", default=DATA_STREAM, help="dataset of the recipe/budget/gt plans")
    p.add_argument("--probe-epochs", type=float, default=16.0, help="budget of the data/canvas/recipe probes")
    p.add_argument("--budget-epochs", type=float, default=16.0, help="E of the budget and gt plans")
    p.add_argument("--n-archs", type=int, default=32, help="gt: architectures (first ground truth's order)")
    p.add_argument("--n-reseed", type=int, default=12, help="gt: of them, trained with a second seed")
    p.add_argument("--workers", type=int, default=3, help="training processes sharing the GPU")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--time-budget", type=float, default=420.0,
                   help="seconds after which only runs whose duration was measured\non their arch start (if they fit)")
    p.add_argument("--hard-stop", type=float, default=540.0,
                   help="seconds after which running runs are cut;\na run starts only if predicted to end 10%% before")
    p.add_argument("--analyze", action="store_true", help="write the summary JSON from --out and print the table")
    p.add_argument("--dry-run", action="store_true", help="list the runs still to do; train nothing")
    p.add_argument("--limit", type=int, default=None, help="run at most this many of the runs still to do")
    p.add_argument("--arch-source", type=Path, default=None,
                   help=f"--analyze: the first ground truth (proxy scores) [{ARCH_SOURCE.relative_to(ROOT)}]")
    p.add_argument("--export-truth", type=Path, default=None,
                   help="--analyze: also write the gt plan as bench/supernet.py's ground truth JSON")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny archs, 4 steps per run (checks the whole path)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.device, args.workers = "cpu", min(args.workers, 2)
    if args.analyze:
        return analyze(args)
    return run_plans(args)


if __name__ == "__main__":
    raise SystemExit(main())
