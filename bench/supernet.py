"""Evidence for the once-for-all supernet (issue #30, part 4): cost, speed and ranking quality.

On a ground truth of stand-alone top-1s (same data, recipe and budget E), in one resumable run:

  supernet    ``nas supernet train`` of the space (``evaluators.supernet.train_supernet``), cut into
              calls of ``--time-budget`` seconds: run this script again until it exits 0.
  standalone  one ``train_proxy`` run of the largest subnet at E (the cost and img/s baseline).
  eval        inherited top-1 (BatchNorm recalibrated) of every ground-truth architecture and of
              the presets, with its seconds.
  analysis    Kendall tau (95 % bootstrap CI) of inherited vs stand-alone top-1 over all
              architectures and inside each throughput tertile (params when the ground truth
              has no throughput; the summary's ``tertiles_by`` says which), the same for the
              baselines (params, FLOPs, the ground truth's own proxies: zero-cost scores and
              ``train@E/4``), the mean gap, the cost ratio and seconds per architecture.

The results file (``supernet-bench.json``) is written after every unit and refuses a resume with
other settings; the summary (``supernet-summary.json``) has the issue's keys.

    python bench/supernet.py --smoke --out-dir /tmp/sn                     # CPU, a tiny space, ~1 min

On ground truth 2 (issue #29: its ``gt`` plan finished), the ground truth is exported on the CPU, then
the supernet is trained on the GPU with the same data, recipe and budget E (16 epochs, 64 px, ground
truth 2's recipe from its summary: grad clip 1.0, label smoothing 0.1, weight decay 0.05, crop 0.0625
+ flip, lr 3.5e-4 sqrt-scaled at batch 512, 20 % warm-up; the budget it recorded, 1248 steps, comes back
as the summary's 16 epochs, which ``--epochs`` must equal):

    python bench/groundtruth2.py --analyze --export-truth results/benchmarks/groundtruth2-truth.json
    PYTHONPATH=. python bench/supernet.py --groundtruth results/benchmarks/groundtruth2-truth.json \\
        --space default --data fmnist-odd:train=stream --data-dir .data/fmnist --epochs 16 --resolution 64 \\
        --train-recipe results/benchmarks/groundtruth2-summary.json --time-budget 540
                                                            # GPU: run it again while it exits 75

Each call stops before ``--time-budget`` seconds (one GPU run of <= 9 minutes); the supernet's folder
(``--out-dir``/supernet-run, GBs of weights and optimizer state) must stay between calls, so keep the
GPU machine warm. ``--train-recipe`` follows ``bench/bench_recipe.py``'s rules (as ``bench/oneshot.py``):
a field the supernet cannot follow is refused, an option that contradicts the recipe is refused naming
both, options not given take the recipe's batch, resolution, LR and warm-up; the recipe is part of the
settings a resume must repeat and is written into the results file and the summary.

A ground truth is a JSON with ``archs`` (each with ``arch_id`` and ``config``; ``top1``, ``params``,
``flops`` and ``throughput`` when it has them; ``throughput_source`` at the top says where the
throughput comes from: ``bench/groundtruth2.py --export-truth`` writes all of them, the throughput
predicted for an H100 by the shipped ``h100`` predictor) and, as ``bench/groundtruth.py`` writes,
``runs`` (``arch_id``, ``top1``, ``kind``: the mean over the ``full`` runs' seeds is the stand-alone
top-1) and ``proxies`` (``{arch_id: {"values": {name: {"value": v}}}}``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_recipe import bench_recipe, check_recipe, check_steps, recipe_steps, supernet_recipe  # noqa: E402

from evaluators.jsonfile import finite, write_json  # noqa: E402

DEFAULT_OUT_DIR = ROOT / "results" / "benchmarks"
RESULTS = "supernet-bench.json"
SUMMARY = "supernet-summary.json"
PAUSED = 75  # exit status: run the same command again
PRESETS = ("faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224", "faster_vit_3_224")
#: settings a resume must repeat
SETTING_KEYS = ("space", "data", "epochs", "resolution", "batch_size", "lr", "warmup", "sandwich_n", "subset",
                "val_subset", "calib_images", "seed", "groundtruth", "presets", "train_recipe")
#: this script's options that a ``--train-recipe`` field may also set (besides ``SET_BY_OPTIONS``)
OWN_OPTIONS = {"lr": "--lr", "warmup": "--warmup"}
DEFAULT_RESOLUTION = 64


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# the ground truth
# ---------------------------------------------------------------------------------------------
def read_groundtruth(path: Path) -> dict[str, Any]:
    """``{"archs": [{arch_id, name, config, top1, throughput?}], "proxies": {name: {arch_id: v}}}``
    from a ground-truth file (see the module docstring)."""
    d = json.loads(Path(path).read_text())
    archs = d.get("archs")
    if not isinstance(archs, list) or not archs:
        raise ValueError(f"{path}: expected a list 'archs' of architectures with 'arch_id' and 'config'")
    runs: dict[str, list[float]] = {}
    for r in d.get("runs", []):
        if r.get("kind", "full") == "full" and r.get("top1") is not None and r.get("status", "ok") == "ok":
            runs.setdefault(r["arch_id"], []).append(float(r["top1"]))
    out = []
    for a in archs:
        top1 = a.get("top1")
        if top1 is None and runs.get(a["arch_id"]):
            top1 = statistics.fmean(runs[a["arch_id"]])
        if top1 is None:
            continue  # not trained (yet): not part of the ground truth
        out.append(dict(arch_id=a["arch_id"], name=a.get("name", a["arch_id"]), config=a["config"],
                        train_config=a.get("train_config"), top1=float(top1), throughput=a.get("throughput"),
                        params=a.get("params"), flops=a.get("flops")))
    proxies: dict[str, dict[str, float]] = {}
    for arch_id, rec in (d.get("proxies") or {}).items():
        for name, v in (rec.get("values") or {}).items():
            value = v.get("value") if isinstance(v, dict) else v
            if value is not None and math.isfinite(float(value)):
                proxies.setdefault(name, {})[arch_id] = float(value)
    if len(out) < 3:
        raise ValueError(f"{path}: only {len(out)} architectures have a stand-alone top-1 (3 needed)")
    return dict(archs=out, proxies=proxies, source=str(path), throughput_source=d.get("throughput_source"))


def smoke_groundtruth(space: Any, out: Path, *, data: Any, n: int, steps: int, resolution: int) -> Path:
    """A tiny ground truth for --smoke: ``n`` random configs of ``space``, each trained ``steps``
    steps with ``train_proxy`` on the CPU (real, if meaningless, stand-alone top-1s)."""
    import numpy as np

    from evaluators.train import train_proxy
    from search_spaces.elastic import sample_subnet

    rng = np.random.default_rng(0)
    archs: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(archs) < n:
        cfg = sample_subnet(space, rng, resolution)
        if cfg.arch_id in seen:
            continue
        seen.add(cfg.arch_id)
        r = train_proxy(cfg, data=data, steps=steps, batch_size=8, subset=64, val_subset=32, device="cpu",
                        progress=False)
        archs.append(dict(arch_id=cfg.arch_id, name=f"s{len(archs)}", config=cfg.to_dict(), top1=r.top1))
    path = out / "smoke-groundtruth.json"
    write_json(path, dict(archs=archs, note="--smoke: a few CPU steps per architecture"))
    return path


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
class Store:
    """The results file: settings, units done, per-architecture records; written after every unit."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path = path
        if path.is_file():
            self.data = json.loads(path.read_text())
            old = {k: self.data["settings"].get(k) for k in SETTING_KEYS}
            new = {k: settings.get(k) for k in SETTING_KEYS}
            if old != new:
                diff = {k: (old[k], new[k]) for k in SETTING_KEYS if old[k] != new[k]}
                raise SystemExit(f"{path} holds a run with other settings {diff}; pass another --out-dir")
        else:
            self.data = dict(benchmark="supernet", settings=settings, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                             sessions=[], supernet=None, standalone=None, evals={})
        self.data["sessions"].append(dict(started=time.strftime("%Y-%m-%dT%H:%M:%S"), gpu=_gpu(), units=[]))
        self.save()  # the settings (and this session) are on file before anything trains

    def save(self, unit: Optional[str] = None) -> None:
        if unit:
            self.data["sessions"][-1]["units"].append(unit)
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path, finite(self.data))


def _left(t0: float, budget: Optional[float]) -> Optional[float]:
    return None if budget is None else budget - (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> int:
    """All units not done yet; returns the exit status (0 done, ``PAUSED`` to be run again)."""
    import torch

    from evaluators.augment import Augment
    from evaluators.data import load_dataset
    from evaluators.supernet import InheritedAccuracy, SupernetRecipe, load_supernet, train_supernet
    from evaluators.train import train_proxy
    from search_spaces import resolve_config
    from search_spaces.elastic import SupernetError
    from search_spaces.space import load_space

    t0 = time.perf_counter()
    out = Path(args.out_dir)
    space = load_space(args.space)
    splits = load_dataset(args.data, data_dir=args.data_dir)
    if args.smoke and not args.groundtruth:
        gt_path = out / "smoke-groundtruth.json"
        if not gt_path.is_file():
            smoke_groundtruth(space, out, data=splits, n=9, steps=2, resolution=args.resolution)
        args.groundtruth = str(gt_path)
    gt = read_groundtruth(Path(args.groundtruth))
    n_train = len(splits.train) if args.subset is None else min(args.subset, len(splits.train))
    batch = args.batch_size or SupernetRecipe.batch_size  # the recipe's recorded budget must be --epochs here
    check_steps(recipe_steps(args.recipe_source), epochs=args.epochs, batch_size=batch, train_images=n_train)
    settings = dict({k: getattr(args, k) for k in SETTING_KEYS}, train_recipe_source=args.recipe_source,
                    data_dir=args.data_dir)
    store = Store(out / RESULTS, settings)
    device = "cpu" if args.smoke else args.device
    recipe = supernet_kwargs(args)
    run_dir = out / "supernet-run"
    evaluation = {"calib_images": args.calib_images} if args.calib_images else {}

    # 1. the supernet (resumable by itself), with --train-recipe's fields
    if store.data["supernet"] is None or store.data["supernet"]["status"] != "done":
        left = _left(t0, args.time_budget)
        r = train_supernet(space, data=splits, out=run_dir, epochs=args.epochs, resolution=args.resolution,
                           device=device, time_budget=left, val_subset=args.val_subset,
                           progress=not args.smoke, max_steps=args.max_steps, **evaluation, **recipe)
        meta = json.loads((run_dir / "supernet.json").read_text())
        store.data["supernet"] = dict(r.to_dict(), train_seconds_total=meta["train_seconds"],
                                      sessions=meta["sessions"], largest=meta["largest"], smallest=meta["smallest"],
                                      supernet_params=meta["supernet_params"], batch_size=meta["recipe"]["batch_size"])
        store.save(f"supernet:{r.status}:{r.steps_done}")
        if r.status != "done":
            print(f"supernet {r.status} at step {r.steps_done} of {r.total_steps}: {r.reason}")
            return PAUSED if r.status == "paused" else 1
    sn = load_supernet(run_dir, device=device)

    # 2. the stand-alone largest subnet at E (one call: it must fit the budget)
    if store.data["standalone"] is None:
        rec = sn.meta["recipe"]
        alone = train_proxy(sn.largest, data=splits, resolution=args.resolution, epochs=args.epochs,
                        batch_size=rec["batch_size"], lr=rec["lr"], lr_scaling=rec["lr_scaling"],
                        weight_decay=rec["weight_decay"], warmup=rec["warmup"], label_smoothing=rec["label_smoothing"],
                        grad_clip=rec["grad_clip"], drop_path_rate=rec.get("drop_path_rate"), subset=rec["subset"],
                        val_subset=args.val_subset, seed=rec["seed"],
                        augment=Augment(rec["augment_crop"], rec["augment_flip"]), device=device,
                        progress=not args.smoke)
        store.data["standalone"] = dict(top1=alone.top1, train_seconds=alone.train_seconds, seconds=alone.seconds,
                                        images_per_s=alone.images_per_s, step_mode=alone.step_mode,
                                        status=alone.status, device=alone.device)
        store.save("standalone")

    # 3. inherited top-1 of every ground-truth architecture and of the presets
    acc = InheritedAccuracy.for_supernet(sn, splits, val_subset=args.val_subset)
    named = [(a["arch_id"], a["config"]) for a in gt["archs"]]
    named += [(f"preset:{p}", p) for p in (args.presets or [])]
    for key, spec in named:
        if key in store.data["evals"]:
            continue
        left = _left(t0, args.time_budget)
        if left is not None and left < 30:
            print(f"time budget reached with {len(named) - len(store.data['evals'])} evaluations left")
            return PAUSED
        try:
            top1, seconds = acc(resolve_config(spec))
            store.data["evals"][key] = dict(top1=top1, seconds=seconds)
        except SupernetError as e:  # e.g. a preset outside the space
            store.data["evals"][key] = dict(top1=None, seconds=None, error=str(e))
        store.save(f"eval:{key}")

    # 4. the analysis
    summary = analyse(store.data, gt, sn)
    store.data["analysis"] = summary["details"]
    store.save("analysis")
    write_json(out / SUMMARY, finite(summary["summary"]))
    print(json.dumps(finite(summary["summary"]), indent=1))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return 0


def supernet_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``train_supernet``'s recipe keywords: the options given, then ``--train-recipe``'s fields (checked against
    them by ``apply_recipe``)."""
    recipe = dict(batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, sandwich_n=args.sandwich_n,
                  subset=args.subset, seed=args.seed)
    recipe = {k: v for k, v in recipe.items() if v is not None}
    recipe.update(supernet_recipe(args.train_recipe))
    return recipe


def _tau(x: list[float], y: list[float]) -> dict[str, Any]:
    from evaluators.proxy_fit import kendall_ci

    if len(x) < 3:
        return dict(n=len(x), kendall_tau=None, tau_ci95=None)
    return kendall_ci(x, y, seed=0)


def _tertiles(keys: list[str], order: dict[str, float]) -> list[list[str]]:
    ranked = sorted(keys, key=lambda k: order[k])
    n = len(ranked)
    return [ranked[i * n // 3:(i + 1) * n // 3] for i in range(3)]


def _throughput_source(src: Any) -> str:
    """One line for where the ground truth's throughput comes from (its ``throughput_source``)."""
    if not isinstance(src, dict):
        return "the ground truth's (source not recorded)"
    what = src.get("kind", "measured")
    return f"{what} images/s on {src.get('gpu')} ({src.get('predictor') or src.get('protocol', '')})".rstrip(" ()")


def analyse(data: dict[str, Any], gt: dict[str, Any], sn: Any) -> dict[str, Any]:
    """Summary (the issue's keys) and details from the results file."""
    from evaluators.cost import analytic_flops, analytic_params
    from search_spaces import FasterViTConfig

    archs = [a for a in gt["archs"] if (data["evals"].get(a["arch_id"]) or {}).get("top1") is not None]
    ids = [a["arch_id"] for a in archs]
    truth = {a["arch_id"]: a["top1"] for a in archs}
    inherited = {k: data["evals"][k]["top1"] for k in ids}
    sizes = {}
    for a in archs:
        cfg = FasterViTConfig.from_dict(a["config"])
        sizes[a["arch_id"]] = dict(params=a.get("params") or analytic_params(cfg),
                                   flops=a.get("flops") or analytic_flops(cfg))
    has_tp = all(a.get("throughput") for a in archs)
    tertile_key = "throughput" if has_tp else "params"
    tertiles_by = (f"throughput: {_throughput_source(gt.get('throughput_source'))}" if has_tp else
                   "params (the ground truth has no throughput for every architecture)")
    order = {a["arch_id"]: (a["throughput"] if has_tp else sizes[a["arch_id"]]["params"]) for a in archs}
    tertiles = _tertiles(ids, order)

    def tau_of(values: dict[str, float], keys: list[str]) -> dict[str, Any]:
        return _tau([values[k] for k in keys], [truth[k] for k in keys])

    main = tau_of(inherited, ids)
    per_tertile = [tau_of(inherited, t) for t in tertiles]
    baselines: dict[str, dict[str, Any]] = {
        "params": tau_of({k: sizes[k]["params"] for k in ids}, ids),
        "flops": tau_of({k: sizes[k]["flops"] for k in ids}, ids)}
    for name, values in gt["proxies"].items():
        keys = [k for k in ids if k in values]
        if len(keys) >= 3:
            baselines[name] = tau_of(values, keys)
    sup, alone = data["supernet"], data["standalone"]
    gpu_s = sup["train_seconds_total"] * max(1, int(sup.get("world_size") or 1))
    eval_s = [data["evals"][k]["seconds"] for k in ids]
    presets = {k.split(":", 1)[1]: v["top1"] for k, v in data["evals"].items()
               if k.startswith("preset:") and v.get("top1") is not None}
    sup_ips = sup["steps_done"] * sup["batch_size"] / sup["train_seconds_total"] if sup["train_seconds_total"] else None
    summary = dict(
        gpu=sup.get("device") or _gpu(), dataset=sn.data, epochs=sn.epochs, n_archs=len(ids),
        supernet=dict(kendall_tau=main["kendall_tau"], ci95=main["tau_ci95"],
                      tertile_tau=[t["kendall_tau"] for t in per_tertile],
                      mean_gap=statistics.fmean(inherited[k] - truth[k] for k in ids),
                      cost_ratio=gpu_s / alone["train_seconds"] if alone["train_seconds"] else None,
                      eval_s_per_arch=statistics.median(eval_s)),
        baselines={name: dict(kendall_tau=b["kendall_tau"]) for name, b in baselines.items()},
        presets_top1_supernet=presets, tertiles_by=tertiles_by, train_recipe=data["settings"].get("train_recipe"))
    details = dict(tertile_key=tertile_key, tertiles_by=tertiles_by, throughput_source=gt.get("throughput_source"),
                   tertiles=tertiles, tau=main, tertile_tau=per_tertile, baselines=baselines,
                   supernet_gpu_seconds=gpu_s, standalone_train_seconds=alone["train_seconds"],
                   supernet_images_per_s=sup_ips, standalone_images_per_s=alone["images_per_s"],
                   speed_ratio=sup_ips / alone["images_per_s"] if sup_ips and alone["images_per_s"] else None,
                   sandwich_subnets=2 + (2 if data["settings"].get("sandwich_n") is None
                                         else int(data["settings"]["sandwich_n"])),
                   largest_standalone_top1=alone["top1"],
                   largest_inherited_top1=(sup.get("final_top1") or {}).get("largest"),
                   eval_seconds=dict(median=statistics.median(eval_s), max=max(eval_s)),
                   rows=[dict(arch_id=k, standalone=truth[k], inherited=inherited[k], **sizes[k]) for k in ids],
                   platform=platform.platform(), python=platform.python_version())
    return dict(summary=summary, details=details)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--groundtruth", help="ground-truth JSON of stand-alone top-1s (see the module docstring)")
    p.add_argument("--space", default="default", help="search space of the supernet (built-in name or YAML)")
    p.add_argument("--data", default="fmnist-odd", help="dataset (the ground truth's)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (default: the system's)")
    p.add_argument("--epochs", type=float, default=None, help="budget E (the ground truth's)")
    p.add_argument("--resolution", type=int, default=None,
                   help=f"training resolution (the ground truth's; default: the recipe's, else {DEFAULT_RESOLUTION})")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch (default: the recipe's, else the trainer's)")
    p.add_argument("--lr", type=float, default=None, help="peak LR at batch 256 (default: the recipe's, else the "
                   "trainer's)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up fraction (default: the recipe's, else the "
                   "trainer's)")
    p.add_argument("--train-recipe", dest="recipe_source", default=None, metavar="JSON|FILE",
                   help="the ground truth's training recipe, which the supernet and the stand-alone run\n"
                        "follow (e.g. results/benchmarks/groundtruth2-summary.json; bench/bench_recipe.py)")
    p.add_argument("--sandwich-n", type=int, default=None, help="random subnets a step (default: the trainer's)")
    p.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    p.add_argument("--val-subset", type=int, default=None, help="validation images (default: all)")
    p.add_argument("--calib-images", type=int, default=None,
                   help="training images of each BatchNorm recalibration (default: the trainer's)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the trainer's)")
    p.add_argument("--presets", nargs="*", default=list(PRESETS), help="presets whose inherited top-1 to report")
    p.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when available)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds this call may take (exit 75: run again)")
    p.add_argument("--max-steps", type=int, default=None, help="supernet steps this call at most")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="folder of the results and the supernet run")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny space, a ground truth made here")
    args = p.parse_args(argv)
    if args.smoke:
        from tests.spaces import tiny_space

        args.space = args.space if args.space != "default" else tiny_space()
        args.data = "fashion-mnist" if args.data == "fmnist-odd" else args.data
        args.epochs = args.epochs or 0.25
        args.batch_size, args.subset, args.val_subset = args.batch_size or 8, args.subset or 64, args.val_subset or 32
        args.presets = []
        args.calib_images = args.calib_images or 16
    if not args.smoke and (args.groundtruth is None or args.epochs is None):
        p.error("--groundtruth and --epochs are needed (or --smoke)")
    apply_recipe(args)
    return args


def apply_recipe(args: argparse.Namespace) -> None:
    """``--train-recipe`` as ``args.train_recipe`` (its fields; None without one), refused before anything trains
    when the supernet cannot follow a field or an option given contradicts it (one error naming both); options
    not given take the recipe's batch, resolution, LR and warm-up."""
    args.train_recipe = fields = bench_recipe(args.recipe_source)
    fields = fields or {}
    clashes = [f"{k} {fields[k]!r} (the option {o} is {getattr(args, k)!r})" for k, o in OWN_OPTIONS.items()
               if k in fields and getattr(args, k) is not None and getattr(args, k) != fields[k]]
    if clashes:
        raise SystemExit(f"error: --train-recipe sets {'; '.join(clashes)}: pass the options with the recipe's "
                         f"values, or drop them")
    for k in ("batch_size", "resolution", *OWN_OPTIONS):
        if getattr(args, k) is None and fields.get(k) is not None:
            setattr(args, k, fields[k])
    if args.resolution is None:
        args.resolution = DEFAULT_RESOLUTION
    if fields:  # the options the recipe shares with this script's must agree with it
        from evaluators.supernet import SupernetRecipe

        check_recipe(dict(train_recipe=fields, epochs=args.epochs, batch_size=args.batch_size or
                          SupernetRecipe.batch_size, resolution=args.resolution, subset=args.subset,
                          val_subset=args.val_subset))


def main(argv: Optional[list[str]] = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
