"""Ground truth for accuracy proxies on a task where FasterViT's knobs matter (issue #10).

What it does:
  1. Samples ``--n-archs`` architectures from the default search space (seeded), balancing the
     marginal counts of every knob's values, always including FasterViT-0..3's knob values.
  2. Trains each with ONE recipe on ``--data`` (default ``fmnist-odd:train=stream``: composed canvases
     drawn afresh per batch, ``evaluators.composed``; 16 epochs at lr 3.5e-4, warm-up 20 %: issue #29's
     stable recipe)
     with ``evaluators.train.train_proxy`` -> the ground truth (final val top-1); re-trains
     ``--n-reseed`` of them with a second seed (seed-to-seed tau and sd), and trains the same
     ones with both seeds on ``--easy-data`` (Fashion-MNIST: the easy-data case).
  3. The short-training proxy: the same recipe at each of ``--short-fractions`` of the steps.
  4. Every zero-cost proxy (``evaluators.proxies``) on a freshly initialised model (seed
     ``--proxy-seed``) and one batch of ``--proxy-batch`` training images, for the trained archs.
  Then ``bench/groundtruth_analysis.py`` (also ``--analyze-only``) writes the summary.

Tasks run in that priority order, so a run cut by ``--time-budget`` leaves a usable prefix;
``--only KINDS`` runs some kinds only (e.g. ``--only proxies --device cpu`` scores the trained
architectures on a machine without a GPU). ``--workers`` spawned processes share one GPU, each
owning its own task queue; results are written to the JSON after every finished task,
atomically, and a re-run skips finished (kind, arch_id, seed) tasks: runs of at most 10 minutes
add up to the whole experiment. Timings measured while workers share the GPU are contended.

    python bench/groundtruth.py --smoke                                          # CPU, tiny
    python bench/groundtruth.py --data-dir DIR --only full,easy,short --time-budget 540   # GPU
    python bench/groundtruth.py --only proxies --device cpu --workers 2          # proxies, CPU
    python bench/groundtruth.py --analyze-only

Results go to ``results/benchmarks/groundtruth-stable.json``. The first ground truth (4 epochs of 40k
fixed canvases, lr 1e-3, warm-up 10 %) stays committed as the earlier record in
``results/benchmarks/groundtruth.json``: ``--analyze-only --out results/benchmarks/groundtruth.json``
re-analyses it, and resuming it needs its options (``EARLIER_ARGS``); a file is only ever resumed
with the settings it was made with (else an error names the settings that differ).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere (spawned workers re-import this file)
    sys.path.insert(0, str(ROOT))

from evaluators.jsonfile import finite, write_json  # noqa: E402

BENCH = "groundtruth"
SCHEMA_VERSION = 1
#: results of the default (stable, issue #29) recipe; the earlier record stays where it was
DEFAULT_OUT = ROOT / "results" / "benchmarks" / "groundtruth-stable.json"
#: the first ground truth (issue #10: 4 epochs of 40k fixed canvases at lr 1e-3, warm-up 10 %), kept
#: as the earlier record; resumed or re-analysed with ``--out`` and these options
EARLIER_OUT = ROOT / "results" / "benchmarks" / "groundtruth.json"
EARLIER_ARGS = ("--data", "fmnist-odd", "--epochs", "4", "--lr", "1e-3", "--warmup", "0.1")
PRESET_NAMES = {"fv0": "faster_vit_0_224", "fv1": "faster_vit_1_224", "fv2": "faster_vit_2_224",
                "fv3": "faster_vit_3_224"}
TARGET_TAU = 0.6
TARGET_MARGIN = 0.1
MIN_ARCHS_FOR_VERDICT = 10
#: settings that define the experiment; a resumed run must match them exactly
RECIPE_KEYS = ("data", "easy_data", "space", "n_archs", "sample_seed", "resolution", "epochs", "subset", "val_subset",
               "batch_size", "lr", "weight_decay", "warmup", "label_smoothing", "drop_path", "grad_clip", "amp",
               "augment_crop", "augment_flip", "compile", "seed", "reseed_seed", "n_reseed", "short_fractions",
               "short_seed", "proxy_batch", "proxy_seed")
#: task kinds: zero-cost proxies, the ground truth, the easy-data case, short training at a fraction
KINDS = ("proxies", "full", "easy", "short")


# =============================================================================================
# architectures
# =============================================================================================
def _encode(value: Any) -> str:
    return json.dumps(value)


def sample_archs(space: Any, *, n: int, seed: int, resolution: int, pool_factor: int = 25) -> list[dict[str, Any]]:
    """``n`` distinct architectures: FasterViT-0/1/2, then greedy marginal balancing over a seeded pool.

    A pool of random points (valid at ``resolution``) is drawn with ``numpy.random.default_rng(seed)``;
    points are then picked one at a time, each time the one whose knob values are rarest so far
    (sum over knobs of 1 / (1 + count of its value); an inactive conditional knob counts as the
    value "inactive"), ties going to the earlier pool point. Every value of every knob ends up
    about equally often, unlike plain random sampling at n = 40.
    """
    import numpy as np

    from search_spaces import PRESETS

    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()

    def record(name: str, knobs: dict[str, Any], cfg: Any) -> dict[str, Any]:
        train_cfg = cfg.at_resolution(resolution)
        return dict(arch_id=cfg.arch_id, name=name, knobs=knobs, config=cfg.to_dict(), train_config=train_cfg.to_dict(),
                    train_arch_id=train_cfg.arch_id, summary=train_cfg.summary())

    for short, preset in PRESET_NAMES.items():
        knobs = space.params_for(PRESETS[preset])
        if knobs is None:
            raise ValueError(f"{preset} is not a point of space {space.name!r}")
        cfg = space.apply(knobs)
        chosen.append(record(short, knobs, cfg))
        seen.add(cfg.arch_id)
    if n < len(chosen):
        raise ValueError(f"--n-archs={n} must be >= {len(chosen)} (FasterViT-0/1/2 are always included)")
    rng = np.random.default_rng(seed)
    pool: list[tuple[dict[str, Any], Any]] = []
    attempts = 0
    while len(pool) < pool_factor * n and attempts < 200 * n:
        attempts += 1
        try:
            knobs, cfg = space.sample_random(rng)
            cfg.at_resolution(resolution)
        except ValueError:
            continue
        if cfg.arch_id in seen:
            continue
        seen.add(cfg.arch_id)
        pool.append((knobs, cfg))
    names = [k.name for k in space.knobs]
    counts = {k: Counter() for k in names}

    def values(knobs: dict[str, Any]) -> dict[str, str]:
        return {k: _encode(knobs[k]) if k in knobs else "inactive" for k in names}

    for a in chosen:
        for k, v in values(a["knobs"]).items():
            counts[k][v] += 1
    used = [False] * len(pool)
    encoded = [values(kn) for kn, _ in pool]
    while len(chosen) < n:
        best, best_score = -1, -1.0
        for i, enc in enumerate(encoded):
            if used[i]:
                continue
            score = sum(1.0 / (1 + counts[k][v]) for k, v in enc.items())
            if score > best_score:
                best, best_score = i, score
        if best < 0:
            raise ValueError(f"the space gave only {len(chosen)} distinct architectures valid at {resolution} px")
        used[best] = True
        for k, v in encoded[best].items():
            counts[k][v] += 1
        knobs, cfg = pool[best]
        chosen.append(record(f"s{len(chosen) - len(PRESET_NAMES):02d}", knobs, cfg))
    return chosen


def smoke_archs(resolution: int) -> list[dict[str, Any]]:
    """Three tiny architectures for the CPU smoke run (HAT, global attention, deeper)."""
    from search_spaces import FasterViTConfig

    base = dict(resolution=resolution, dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                window_size=(2, 2, 2, 2), num_classes=10, drop_path_rate=0.0)
    cfgs = [FasterViTConfig(**base),
            FasterViTConfig(**dict(base, window_size=(2, 2, 4, 2), hat=(False,) * 4)),
            FasterViTConfig(**dict(base, dim=24, depths=(1, 2, 2, 1), num_heads=(1, 1, 3, 3), ct_size=1))]
    return [dict(arch_id=c.arch_id, name=f"t{i}", knobs={}, config=c.to_dict(), train_config=c.to_dict(),
                 train_arch_id=c.arch_id, summary=c.summary()) for i, c in enumerate(cfgs)]


def diversity(archs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts of each value of the knobs that matter most for the ranking question."""
    out: dict[str, dict[str, int]] = {}
    for key in ("dim", "depths[2]", "window_size[2]", "hat[2]", "ct_size", "ct_init_kernel", "mlp_ratio",
                "layer_scale"):
        c = Counter(_encode(a["knobs"][key]) if key in a["knobs"] else "inactive" for a in archs)
        out[key] = dict(sorted(c.items()))
    return out


# =============================================================================================
# tasks
# =============================================================================================
def task_key(t: dict[str, Any]) -> str:
    kind = f"short@{t['fraction']:g}" if t["kind"] == "short" else t["kind"]
    return f"{kind}:{t['arch_id']}:{t['seed']}"


def build_tasks(archs: list[dict[str, Any]], s: dict[str, Any]) -> list[dict[str, Any]]:
    """All tasks in priority order, so that any prefix a time budget cuts is usable.

    First the re-seeded architectures (ground truth with both seeds, and the same two seeds on the
    easy data), then the ground truth of every other architecture, then the short-training proxy
    at each fraction (smallest budget first), then the zero-cost proxies.
    """
    reseed = reseed_indices(len(archs), s["n_reseed"])
    tasks = []
    for i in sorted(reseed):
        a = archs[i]["arch_id"]
        tasks += [dict(kind="full", arch_id=a, seed=s["seed"]), dict(kind="full", arch_id=a, seed=s["reseed_seed"]),
                  dict(kind="easy", arch_id=a, seed=s["seed"]), dict(kind="easy", arch_id=a, seed=s["reseed_seed"])]
    tasks += [dict(kind="full", arch_id=a["arch_id"], seed=s["seed"]) for i, a in enumerate(archs) if i not in reseed]
    for frac in sorted(s["short_fractions"]):
        tasks += [dict(kind="short", fraction=frac, arch_id=a["arch_id"], seed=s["short_seed"]) for a in archs]
    tasks += [dict(kind="proxies", arch_id=a["arch_id"], seed=s["proxy_seed"]) for a in archs]
    return tasks


def reseed_indices(n: int, k: int) -> set[int]:
    """``k`` architecture indices spread evenly over ``0..n-1`` (0, n/k, 2n/k, ...): the ceiling is
    measured across the whole range of architectures, not only on the first (FasterViT-0/1/2)."""
    return {int(i * n / k) for i in range(k)} if k else set()


def steps_per_epoch(s: dict[str, Any], train_size: int) -> int:
    return (s["subset"] or train_size) // s["batch_size"]


def task_steps(t: dict[str, Any], s: dict[str, Any], train_size: int) -> int:
    """Steps of a training task: the ground-truth budget (epochs of the ground-truth train split,
    also for the easy data, so both see the same number of images), times the short fraction."""
    full = max(1, round(s["epochs"] * steps_per_epoch(s, train_size)))
    return max(1, round(full * t["fraction"])) if t["kind"] == "short" else full


def task_images(t: dict[str, Any], s: dict[str, Any], train_size: int, val_size: int) -> int:
    """Images processed (training images + validation images weighted 1/3: forward only)."""
    if t["kind"] == "proxies":
        return 0
    steps = task_steps(t, s, train_size)
    evals = max(1, int(steps // steps_per_epoch(s, train_size))) if t["kind"] == "full" else 1
    return steps * s["batch_size"] + evals * (s["val_subset"] or val_size) // 3


def _work_units(arch: dict[str, Any]) -> float:
    """Relative cost of one training step: blocks (launch-bound) plus width-weighted compute."""
    c = arch["train_config"]
    return sum(c["depths"]) + 4 + sum(c["depths"]) * (c["dim"] / 64) ** 2 * 0.5


# =============================================================================================
# worker process
# =============================================================================================
def _error_text(e: BaseException) -> str:
    return (f"{type(e).__name__}: {e}".strip().splitlines() or [type(e).__name__])[0][:500]


def setup_torch(device: str, threads: int) -> str:
    """A worker's torch: its CPU threads and, on a GPU, cuDNN autotuning and TF32; returns the GPU's name."""
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but CUDA is not available in the worker")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.cuda.get_device_name()
    return "cpu"


def _worker(wid: int, setup: dict[str, Any], tasks: Any, results: Any) -> None:
    """Worker loop: load the data once onto the device, then run tasks from its own queue."""
    try:
        import torch

        from evaluators.data import load_dataset

        device = setup["device"]
        gpu = setup_torch(device, setup["threads"])
        splits = {"main": load_dataset(setup["data"], data_dir=setup["data_dir"]).to(device)}
        if setup["settings"].get("easy_data"):
            splits["easy"] = load_dataset(setup["settings"]["easy_data"], data_dir=setup["data_dir"]).to(device)
    except Exception as e:  # reported to the main process, which stops with this message
        results.put(("fatal", wid, None, _error_text(e)))
        return
    results.put(("ready", wid, None, dict(gpu=gpu, pid=os.getpid())))
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            out = _run_task(task, splits, setup, gpu, wid)
            results.put(("done", wid, task, out))
        except Exception as e:  # recorded as a failure of this task; retried by a later run
            fatal = isinstance(e, RuntimeError) and "CUDA error" in str(e)
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            results.put(("error", wid, task, _error_text(e)))
            if fatal:  # the CUDA context may be broken: end this worker, the main process starts another
                return


def _run_task(task: dict[str, Any], all_splits: Any, setup: dict[str, Any], gpu: str, wid: int) -> dict[str, Any]:
    from search_spaces import FasterViTConfig

    s = setup["settings"]
    arch = setup["archs"][task["arch_id"]]
    device = setup["device"]
    splits = all_splits["main"]
    if task["kind"] == "proxies":
        from evaluators.data import normalization, sample_batch
        from evaluators.proxies import compute_proxies, init_model

        cfg = FasterViTConfig.from_dict(arch["train_config"]).replace(num_classes=splits.num_classes)
        model = init_model(cfg, task["seed"], device=device)
        mean, std = normalization(model)
        batch = sample_batch(splits.train, batch_size=s["proxy_batch"], resolution=cfg.resolution,
                             seed=s["proxy_seed"], device=device, mean=mean, std=std)
        res = compute_proxies(model, setup["proxies"], batch, device=device, seed=task["seed"])
        return dict(values={n: r.to_dict() for n, r in res.items()}, gpu=gpu, worker=wid)
    from evaluators.augment import Augment
    from evaluators.train import train_proxy

    train_size = len(splits.train) if s["subset"] is None else s["subset"]
    steps = task_steps(task, s, len(splits.train))
    data = all_splits["easy"] if task["kind"] == "easy" else splits
    r = train_proxy(FasterViTConfig.from_dict(arch["config"]), data=data, resolution=s["resolution"], steps=steps,
                    batch_size=s["batch_size"], subset=min(train_size, len(data.train)), val_subset=s["val_subset"],
                    lr=s["lr"], weight_decay=s["weight_decay"], warmup=s["warmup"],
                    label_smoothing=s["label_smoothing"], grad_clip=s["grad_clip"], drop_path_rate=s["drop_path"],
                    augment=Augment(crop=s["augment_crop"], flip=s["augment_flip"]), compile=s["compile"],
                    seed=task["seed"], device=device, amp=s["amp"], eval_every=steps_per_epoch(s, len(splits.train)),
                    progress=False)
    d = r.to_dict()
    d.pop("config", None)
    d["step_mode"] = r.recipe.get("step_mode")
    d.pop("recipe", None)
    d.update(gpu=gpu, worker=wid, data=data.name)
    return d


# =============================================================================================
# results file
# =============================================================================================
class Store:
    """The results JSON: settings, architectures, proxy records, training runs, failures, analysis."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, path: Path, settings: Optional[dict[str, Any]], archs: Optional[list[dict[str, Any]]], *,
             bench: str = BENCH, recipe_keys: tuple[str, ...] = RECIPE_KEYS) -> "Store":
        """Resume ``path`` (its settings must match ``recipe_keys``) or create it; ``bench`` names the experiment."""
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path} is not valid JSON ({e}); move it away or pass another --out") from None
            if data.get("benchmark") != bench:
                raise SystemExit(f"error: {path} is not a {bench} results file")
            if settings is not None:
                old = {k: data["settings"].get(k) for k in recipe_keys}
                new = {k: settings[k] for k in recipe_keys}
                diff = {k: (old[k], new[k]) for k in recipe_keys if finite(old[k]) != finite(new[k])}
                if diff:
                    lines = ", ".join(f"{k}: file {a!r} vs now {b!r}" for k, (a, b) in diff.items())
                    raise SystemExit(f"error: {path} holds another experiment ({lines}); pass the same options to "
                                     f"resume, or another --out")
            return cls(path, data)
        if settings is None:
            raise SystemExit(f"error: {path} does not exist (nothing to analyse)")
        data = dict(benchmark=bench, schema_version=SCHEMA_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    settings=settings, archs=archs, proxies={}, runs=[], failures=[], sessions=[], analysis=None,
                    notes=["top1 in percent on the full validation split (Fashion-MNIST: the official 10k test set)",
                           "proxy seconds are measured inside worker processes while other workers train on the "
                           "same GPU: contended, so upper bounds of the isolated cost",
                           "every proxy is higher = better; a negative tau means the proxy ranks in reverse"])
        store = cls(path, data)
        store.save()
        return store

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path, self.data)

    def finished(self) -> set[str]:
        done = {f"proxies:{a}:{r['seed']}" for a, r in self.data["proxies"].items()}
        done |= {task_key(r) for r in self.data["runs"] if r.get("status") in ("ok", "nan", "pruned")}
        return done

    def add(self, task: dict[str, Any], out: dict[str, Any]) -> None:
        out = dict(out, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if task["kind"] == "proxies":
            self.data["proxies"][task["arch_id"]] = dict(out, seed=task["seed"])
            arch = next(a for a in self.data["archs"] if a["arch_id"] == task["arch_id"])
            for key in ("params", "flops"):
                v = out["values"].get(key, {})
                if v.get("value") is not None:
                    arch[key] = int(v["value"])
                    arch.pop(f"{key}_error", None)
                else:
                    arch[key] = None
                    arch[f"{key}_error"] = f"{key} unavailable: {v.get('error')}"
        else:
            self.data["runs"] = [r for r in self.data["runs"] if task_key(r) != task_key(task)]
            self.data["runs"].append(dict(out, **task))
        self.save()

    def fail(self, task: dict[str, Any], error: str, worker: Any) -> None:
        self.data["failures"].append(dict(task, error=error, worker=worker,
                                          at=time.strftime("%Y-%m-%dT%H:%M:%S")))
        self.save()


# =============================================================================================
# scheduling
# =============================================================================================
class Estimator:
    """Seconds a training task will take in a worker (given the current concurrency).

    Model: seconds = c * images * work_units(arch); c starts from the assumed aggregate
    throughput and becomes the median of the finished tasks' c.
    """

    def __init__(self, assumed_img_s: float, workers: int, ref_units: float):
        self.prior = workers / (assumed_img_s * ref_units)
        self.samples: list[float] = []

    def c(self) -> float:
        if len(self.samples) < 3:
            return max([self.prior] + self.samples)
        xs = sorted(self.samples)
        return xs[len(xs) // 2]

    def add(self, seconds: float, images: int, units: float) -> None:
        if images > 0 and seconds > 0:
            self.samples.append(seconds / (images * units))

    def seconds(self, images: int, units: float, kind: str) -> float:
        if kind == "proxies":
            return 15.0
        return self.c() * images * units + 5.0


def _fmt_s(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def run_tasks(store: Store, settings: dict[str, Any], archs: list[dict[str, Any]], *, workers: int, threads: int,
              device: str, data: str, data_dir: Optional[str], time_budget: Optional[float], assumed_img_s: float,
              train_size: int, val_size: int, t0: float, dry_run: bool = False, max_start: Optional[int] = None,
              only: Optional[set[str]] = None, proxies: Optional[list[str]] = None,
              tasks: Optional[list[dict[str, Any]]] = None) -> int:
    """Run the unfinished tasks with a pool of spawned workers; returns the number finished now.

    ``tasks`` (default ``build_tasks``: the ground truth's) is the whole experiment in priority
    order; ``max_start`` stops starting tasks after that many (the smoke run uses it to test resuming).
    """
    import multiprocessing as mp

    by_id = {a["arch_id"]: a for a in archs}
    all_tasks = build_tasks(archs, settings) if tasks is None else tasks
    done = store.finished()
    pending = [t for t in all_tasks if task_key(t) not in done and (not only or t["kind"] in only)]
    if only and not only & {"full", "easy"}:  # proxies are only worth computing where a ground truth exists
        trained = {r["arch_id"] for r in store.data["runs"] if r["kind"] == "full" and r.get("top1") is not None}
        pending = [t for t in pending if t["arch_id"] in trained]
    n_total, n_todo = len(all_tasks), len(pending)
    ref = _work_units(by_id[archs[0]["arch_id"]])
    est = Estimator(assumed_img_s, workers, 1.0)  # work units are passed relative to the first arch (FV-0)
    images = sum(task_images(t, settings, train_size, val_size) for t in pending)
    guess = sum(est.seconds(task_images(t, settings, train_size, val_size), _work_units(by_id[t["arch_id"]]) / ref,
                            t["kind"]) for t in pending) / max(1, workers)
    print(f"{n_todo} of {n_total} tasks to run ({n_total - n_todo} already in {store.path}); "
          f"{images / 1e6:.2f} M training images; at an assumed {assumed_img_s:,.0f} img/s aggregate over {workers} "
          f"workers (a guess until tasks finish) about {_fmt_s(guess)}"
          + (f"; time budget {_fmt_s(time_budget)}" if time_budget else ""), flush=True)
    if dry_run:
        kinds = Counter(t["kind"] for t in pending)
        print(f"dry run: {dict(kinds)} tasks; nothing started", flush=True)
        return 0
    if not pending:
        return 0
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    setup = dict(settings=settings, archs=by_id, device=device, data=data, data_dir=data_dir, threads=threads,
                 proxies=proxies or [])
    procs: dict[int, Any] = {}
    queues: dict[int, Any] = {}
    next_wid = 0

    def start_worker() -> None:
        nonlocal next_wid
        q = ctx.Queue()
        p = ctx.Process(target=_worker, args=(next_wid, setup, q, results), daemon=True)
        p.start()
        procs[next_wid], queues[next_wid] = p, q
        next_wid += 1

    for _ in range(min(workers, n_todo)):
        start_worker()
    idle: list[int] = []
    in_flight: dict[int, tuple[dict[str, Any], float]] = {}
    finished_now = 0
    restarts = 0
    stopped_by_budget = False
    started = 0
    images_done = 0
    t_first = None
    deadline = t0 + time_budget if time_budget else None
    session = dict(started=time.strftime("%Y-%m-%dT%H:%M:%S"), workers=workers, device=device, gpu=None,
                   time_budget=time_budget, tasks_finished=0, tasks_failed=0, stopped_by_budget=False)
    store.data["sessions"].append(session)
    try:
        while pending or in_flight:
            while idle and pending:
                t = pending[0]
                units = _work_units(by_id[t["arch_id"]]) / ref
                need = est.seconds(task_images(t, settings, train_size, val_size), units, t["kind"])
                if (deadline is not None and time.time() + need > deadline) or (
                        max_start is not None and started >= max_start):
                    stopped_by_budget = True
                    break
                started += 1
                if t["kind"] != "proxies":  # aggregate img/s counts from the first training task
                    t_first = t_first or time.time()
                pending.pop(0)
                wid = idle.pop(0)
                queues[wid].put(t)
                in_flight[wid] = (t, time.time())
            if stopped_by_budget and not in_flight:
                break
            if not in_flight and not idle and not procs:
                raise SystemExit("error: no worker is alive")
            try:
                kind, wid, task, payload = results.get(timeout=5.0)
            except queue.Empty:
                for w, p in list(procs.items()):
                    if not p.is_alive():
                        if w in in_flight:
                            t, _ = in_flight.pop(w)
                            store.fail(t, f"worker {w} died (exit code {p.exitcode})", w)
                            session["tasks_failed"] += 1
                        procs.pop(w)
                        if w in idle:
                            idle.remove(w)
                        if pending and restarts < 2 * workers:
                            restarts += 1
                            start_worker()
                continue
            if kind == "fatal":
                raise SystemExit(f"error: worker {wid} could not start: {payload}")
            if kind == "ready":
                session["gpu"] = payload["gpu"]
                store.data.setdefault("device", {}).update(gpu=payload["gpu"])
                idle.append(wid)
                continue
            t, _t_start = in_flight.pop(wid)
            idle.append(wid)
            elapsed = time.time() - t0
            if kind == "error":
                store.fail(t, payload, wid)
                session["tasks_failed"] += 1
                print(f"  FAILED {t['kind']} {by_id[t['arch_id']]['name']} seed {t['seed']}: {payload}", flush=True)
                if not procs[wid].is_alive() or "CUDA error" in payload:
                    procs[wid].join(timeout=10)
                    procs.pop(wid)
                    idle.remove(wid)
                    if pending and restarts < 2 * workers:
                        restarts += 1
                        start_worker()
                continue
            store.add(t, payload)
            finished_now += 1
            session["tasks_finished"] = finished_now
            name = by_id[t["arch_id"]]["name"]
            if t["kind"] == "proxies":
                errs = [n for n, v in payload["values"].items() if v["error"]]
                secs = sum(v["seconds"] for v in payload["values"].values())
                msg = f"proxies {secs:.1f}s" + (f" (failed: {', '.join(errs)})" if errs else "")
            else:
                imgs = task_images(t, settings, train_size, val_size)
                est.add(payload["seconds"], imgs, _work_units(by_id[t["arch_id"]]) / ref)
                images_done += imgs
                top1 = payload["top1"]
                msg = (f"top1 {top1:.2f}%" if top1 is not None else f"status {payload['status']}") + \
                      f" {payload['seconds']:.0f}s {payload['images_per_s']:,.0f} img/s"
                if payload["status"] != "ok":
                    msg += f" [{payload['status']}: {payload['reason']}]"
            left = sum(est.seconds(task_images(x, settings, train_size, val_size),
                                   _work_units(by_id[x["arch_id"]]) / ref, x["kind"])
                       for x in pending) / max(1, workers)
            rate = images_done / max(1e-9, time.time() - (t_first or time.time()))
            print(f"[{n_total - len(pending) - len(in_flight):3d}/{n_total}] {t['kind']:7s} {name} seed {t['seed']}: "
                  f"{msg} | {_fmt_s(elapsed)} elapsed, {rate:,.0f} img/s aggregate, ~{_fmt_s(left)} of queued "
                  f"work left", flush=True)
    finally:
        for w, q in queues.items():
            if w in procs and procs[w].is_alive():
                q.put(None)
        for p in procs.values():
            p.join(timeout=20)
            if p.is_alive():
                p.terminate()
        session["stopped_by_budget"] = stopped_by_budget
        session["training_images"] = images_done
        session["aggregate_img_s"] = images_done / (time.time() - t_first) if t_first and images_done else None
        session["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        store.save()
    if stopped_by_budget:
        print(f"stopped starting tasks ({'time budget' if max_start is None else 'max_start'}): {len(pending)} not "
              f"started; run the same command again to continue", flush=True)
    return finished_now


# =============================================================================================
# analysis: bench/groundtruth_analysis.py
# =============================================================================================
def analyze(store: Store) -> str:
    """Summary of the results file (``groundtruth_analysis.summarize``), as a markdown table."""
    from groundtruth_analysis import markdown, summarize

    summary = summarize(store.data)
    store.data["analysis"] = summary
    store.save()
    return markdown(summary)


# =============================================================================================
# main
# =============================================================================================
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--data", default="fmnist-odd:train=stream",
                   help="the ground-truth task (a dataset name; default: canvases drawn afresh per batch)")
    p.add_argument("--easy-data", default="fashion-mnist", help="the easy-data case, same archs and recipe ('' = none)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (e.g. the 4 Fashion-MNIST IDX .gz)")
    p.add_argument("--space", default="default")
    p.add_argument("--n-archs", type=int, default=60)
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=64,
                   help="training/proxy resolution: 64 gives the 2x2 stage-3 windows one cell of the task each")
    p.add_argument("--epochs", type=float, default=16.0, help="nominal epochs of the training split")
    p.add_argument("--subset", type=int, default=None, help="training images used (default: all)")
    p.add_argument("--val-subset", type=int, default=None, help="validation images used (default: all 10k)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=3.5e-4, help="peak LR at batch 256 (sqrt-scaled; issue #29's "
                   "stable recipe)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the steps")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth for every arch (0: off)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--augment-crop", type=float, default=0.0625, help="random translation, fraction of the side")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--compile", default="graph", help="train_proxy step mode (auto, eager, graph, compile)")
    p.add_argument("--only", default=None, help="run only these task kinds (comma list of proxies,full,easy,short)")
    p.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast on CUDA")
    p.add_argument("--seed", type=int, default=0, help="ground-truth training seed")
    p.add_argument("--reseed-seed", type=int, default=1, help="second seed for the ceiling")
    p.add_argument("--n-reseed", type=int, default=12, help="architectures trained with the second seed too")
    p.add_argument("--short-fractions", default="0.05,0.1,0.25", help="budgets of the train proxy (fractions of steps)")
    p.add_argument("--short-seed", type=int, default=2, help="seed of the train proxy (not the ground truth's)")
    p.add_argument("--proxy-batch", type=int, default=64)
    p.add_argument("--proxy-seed", type=int, default=3, help="init/batch seed of the zero-cost proxies")
    p.add_argument("--proxies", nargs="+", default=None, help="zero-cost proxies (default: all registered)")
    p.add_argument("--workers", type=int, default=3, help="training processes sharing the GPU")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds from start: no task starts unless its estimated end is within the budget")
    p.add_argument("--assumed-img-s", type=float, default=8000.0,
                   help="aggregate training img/s assumed before any task finished (for estimates only)")
    p.add_argument("--analyze-only", action="store_true", help="recompute the table from --out and print it")
    p.add_argument("--smoke", action="store_true", help="CPU, 3 tiny archs, a few steps (checks the whole path)")
    p.add_argument("--dry-run", action="store_true", help="sample, write the file, print the plan; train nothing")
    return p.parse_args(argv)


def _validate(args: argparse.Namespace) -> None:
    def bad(msg: str) -> None:
        raise SystemExit(f"error: {msg}")
    if args.n_archs < 3:
        bad(f"--n-archs={args.n_archs} must be >= 3")
    if not 0 <= args.n_reseed <= args.n_archs:
        bad(f"--n-reseed={args.n_reseed} must be in [0, --n-archs]")
    try:
        args.short_fractions = [float(v) for v in str(args.short_fractions).split(",") if v]
    except ValueError:
        bad(f"--short-fractions={args.short_fractions!r} must be a comma list of numbers")
    if not args.short_fractions or not all(0 < v <= 1 for v in args.short_fractions):
        bad(f"--short-fractions={args.short_fractions} must be fractions in (0, 1]")
    kinds = set(args.only.split(",")) if args.only else None
    if kinds and not kinds <= set(KINDS):
        bad(f"--only={args.only!r}: kinds are {', '.join(KINDS)}")
    args.only = kinds
    if args.epochs <= 0:
        bad(f"--epochs={args.epochs} must be > 0")
    if args.workers < 1 or args.threads < 1:
        bad("--workers and --threads must be >= 1")
    if args.proxy_batch < 2:
        bad(f"--proxy-batch={args.proxy_batch} must be >= 2")
    if len({args.seed, args.reseed_seed}) != 2:
        bad("--seed and --reseed-seed must differ")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment's settings (what ``RECIPE_KEYS`` of a resumed file must match) from validated args."""
    return dict(data=args.data, space=args.space if not args.smoke else "smoke", n_archs=args.n_archs,
                sample_seed=args.sample_seed, resolution=args.resolution, epochs=args.epochs, subset=args.subset,
                val_subset=args.val_subset, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                warmup=args.warmup, label_smoothing=args.label_smoothing, drop_path=args.drop_path,
                grad_clip=args.grad_clip, amp=not args.no_amp, seed=args.seed, reseed_seed=args.reseed_seed,
                n_reseed=args.n_reseed, short_fractions=args.short_fractions, short_seed=args.short_seed,
                proxy_batch=args.proxy_batch, proxy_seed=args.proxy_seed, easy_data=args.easy_data or None,
                augment_crop=args.augment_crop, augment_flip=not args.no_flip, compile=args.compile,
                recipe_text=("AdamW (betas 0.9/0.999, no weight decay on biases and norm/scale vectors), linear "
                             "warm-up then cosine to 0 per step, cross-entropy with label smoothing, on-device "
                             "random translation + flips; LR given at batch 256, sqrt-scaled; uint8 data on the "
                             "device, bilinear resize + ImageNet normalisation per batch; last partial batch "
                             "dropped; validation on the whole val split"))


def main(argv: Optional[list[str]] = None) -> int:
    t0 = time.time()
    args = parse_args(argv)
    if args.smoke:
        args.device = args.device or "cpu"
        args.n_archs, args.n_reseed, args.resolution = 3, 2, 64
        args.epochs, args.subset, args.val_subset, args.batch_size = 1.0, 128, 64, 32
        args.proxy_batch, args.workers, args.compile = 8, min(args.workers, 2), "eager"
        args.short_fractions = "0.25"
        if args.out is None:
            args.out = Path(tempfile.mkdtemp(prefix="nas-gt-smoke-")) / "groundtruth-smoke.json"
    out = args.out or DEFAULT_OUT
    if args.analyze_only:
        if args.out is None and not out.is_file():
            raise SystemExit(f"error: {out} does not exist yet; the earlier 4-epoch record is analysed with "
                             f"--out {EARLIER_OUT.relative_to(ROOT)}")
        print(analyze(Store.open(out, None, None)))
        return 0
    _validate(args)

    import torch

    from evaluators.proxies import list_proxies
    from search_spaces.space import load_space

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available; use --device cpu (or --smoke)")
    proxies = args.proxies or list_proxies()
    unknown = [n for n in proxies if n not in list_proxies()]
    if unknown:
        raise SystemExit(f"error: unknown proxies {unknown}; known: {', '.join(list_proxies())}")
    settings = settings_from_args(args)

    t_sample = time.time()
    space = load_space(args.space)
    # the smoke run samples the real 60 too (configs only, no models) to check the sampler
    sampled = sample_archs(space, n=60 if args.smoke else args.n_archs, seed=args.sample_seed,
                           resolution=64 if args.smoke else args.resolution)
    print(f"sampled {len(sampled)} architectures from space {space.name!r} in {time.time() - t_sample:.1f}s; "
          f"value counts: {json.dumps(diversity(sampled))}", flush=True)
    archs = smoke_archs(args.resolution) if args.smoke else sampled
    if args.dry_run and not out.is_file():  # plan only: write nothing under --out
        out = Path(tempfile.mkdtemp(prefix="nas-gt-dry-")) / out.name
    store = Store.open(out, settings, archs)
    archs = store.data["archs"]  # a resumed run uses the file's architectures
    if not args.dry_run:
        store.data.setdefault("device", {}).update(
            torch=torch.__version__, python=platform.python_version(), cpu_count=os.cpu_count(),
            cuda=torch.version.cuda if device.startswith("cuda") else None)
        store.data["diversity"] = diversity(archs)
        store.save()

    from evaluators.data import load_dataset

    splits = load_dataset(args.data, data_dir=args.data_dir)  # fails here, once, with the dataset message
    if args.subset is not None and args.subset > len(splits.train):
        raise SystemExit(f"error: --subset={args.subset} exceeds the {len(splits.train)} training images")
    print(f"data: {splits.summary()}; results: {out}", flush=True)
    common = dict(workers=args.workers, threads=args.threads, device=device, data=args.data, data_dir=args.data_dir,
                  time_budget=args.time_budget, assumed_img_s=args.assumed_img_s, train_size=len(splits.train),
                  val_size=len(splits.val), t0=t0, only=args.only, proxies=list(proxies))
    if args.smoke:  # stop after 5 tasks, then resume: the second call must run only the other 6
        first = run_tasks(store, settings, archs, max_start=5, **common)
        second = run_tasks(Store.open(out, settings, archs), settings, archs, **common)
        store = Store.open(out, None, None)
        if (first, second) != (5, len(build_tasks(archs, settings)) - 5):
            print(f"smoke: FAILED, resume ran {first} then {second} tasks")
            return 1
    else:
        run_tasks(store, settings, archs, dry_run=args.dry_run, **common)
        if args.dry_run:
            for a in archs:
                print(f"  {a['name']:4s} {a['arch_id']}  {a['summary']}")
        print(f"total {_fmt_s(time.time() - t0)}; analyse with --analyze-only --out {out}", flush=True)
        return 0
    analysis = analyze(store)
    print(analysis, flush=True)
    if args.smoke:
        left = [t for t in build_tasks(archs, settings) if task_key(t) not in store.finished()]
        again = Store.open(out, settings, archs)
        if left or len(again.finished()) != len(build_tasks(archs, settings)):
            print(f"smoke: FAILED, {len(left)} tasks unfinished: {[task_key(t) for t in left]}; failures: "
                  f"{store.data['failures']}")
            return 1
        table = analyze(Store.open(out, None, None))  # the --analyze-only path
        if table != analysis:
            print("smoke: FAILED, --analyze-only gave another table")
            return 1
        print(f"smoke: ok, every task finished and a re-run would skip all {len(store.finished())} "
              f"({time.time() - t0:.0f}s); file {out}")
    print(f"total {_fmt_s(time.time() - t0)}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
