"""Accuracy effect of every architecture knob on the ground-truth task, beside the paper's deltas (issue #13).

The variants are ``bench/knobs.py``'s (Table S.2 components removed, Table 6's stage-3/4 attention
replaced, the course reproduction's proposals) applied to one preset (default FasterViT-0: the
cheapest released model, so that 3+ seeds fit a GPU session; the paper's Table S.2 is on
FasterViT-2, ``--preset faster_vit_2_224`` runs that). Each distinct architecture is trained with
``--seeds`` on ``--data`` (default ``fmnist-odd``) with the ground truth's recipe
(``bench/groundtruth.py``'s defaults: 64 px, 4 epochs, bs 512, ...), so a knob's effect can be read
against the ground truth's seed noise. At 64 px FasterViT's stage 3 sees 4x4 tokens in 2x2 windows
that each cover one item of the task: carrier tokens and global windows are what let it relate items.

Reported per variant: top-1 mean and sd over seeds, the difference to its group's baseline
(same seeds), and whether that difference is beyond noise: |delta| > 2 * s_pooled * sqrt(2 / n),
with s_pooled the pooled seed sd of all variants (a two-sided ~95% bound for a difference of two
means of n seeds each). The paper's ImageNet deltas (trained from scratch) stand beside it.

Resumable like the ground truth (``bench/groundtruth.py`` machinery: spawned workers sharing the
GPU, the JSON rewritten after every run, a re-run skips finished (arch, seed) runs)::

    PYTHONPATH=. python bench/knob_accuracy.py --data-dir DIR --time-budget 540     # GPU
    PYTHONPATH=. python bench/knob_accuracy.py --analyze-only
    PYTHONPATH=. python bench/knob_accuracy.py --smoke                              # CPU, tiny
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import groundtruth as gt  # noqa: E402

BENCH = "knob_accuracy"
DEFAULT_OUT = ROOT / "results" / "benchmarks" / "knob-accuracy.json"
#: settings that define this experiment (the ground truth's recipe plus the preset and seeds)
RECIPE_KEYS = tuple(k for k in gt.RECIPE_KEYS if k not in ("easy_data", "space", "n_archs", "sample_seed",
                                                           "reseed_seed", "n_reseed", "short_fractions",
                                                           "short_seed", "proxy_batch", "proxy_seed")) + (
    "preset", "seeds")
#: the paper's trained-from-scratch ImageNet top-1 deltas (FasterViT-2, Table S.2; Table 6 for its model)
PAPER_DELTA_S2 = {"no_hat": -0.24, "no_ct_attention": -0.13, "no_attn_bias": -0.31, "no_ct_propagation": -0.16,
                  "no_pos_bias_1d": -0.07, "no_ct_init": -0.05, "window14_stage3": +0.20}
#: Table 6 top-1 (Twins, EdgeViT, HAT) per FasterViT model
PAPER_T6_TOP1 = {0: (80.8, 81.0, 82.2), 1: (82.1, 82.5, 83.2), 2: (82.9, 83.4, 84.1)}


# =============================================================================================
# plan
# =============================================================================================
def variant_groups(base: Any, preset: str) -> dict[str, dict[str, Any]]:
    """``bench/knobs.py``'s groups on ``base``, each with its baseline first and the paper's deltas."""
    from knobs import proposal_variants, s2_variants, t6_variants

    index = int(preset.split("_")[2]) if preset.startswith("faster_vit_") else None
    t6 = PAPER_T6_TOP1.get(index)
    t6_delta = dict(twins=round(t6[0] - t6[2], 2), edgevit=round(t6[1] - t6[2], 2)) if t6 else {}
    return {
        "table_s2": dict(variants=s2_variants(base), paper=PAPER_DELTA_S2,
                         note="paper Table S.2 (FasterViT-2, ImageNet, trained from scratch): top-1 delta"),
        "table_6": dict(variants=t6_variants(), paper=t6_delta,
                        note=f"paper Table 6 ({preset}): top-1 of Twins / EdgeViT minus HAT"),
        "proposals": dict(variants=proposal_variants(base), paper={},
                          note="course reproduction's proposals (no paper numbers)"),
    }


def plan(base: Any, preset: str, resolution: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Distinct architectures (ground-truth arch records) and the groups naming them per variant."""
    archs: dict[str, dict[str, Any]] = {}
    groups: dict[str, Any] = {}
    for name, g in variant_groups(base, preset).items():
        rows = []
        for variant, changes in g["variants"].items():
            cfg = base.replace(**changes)
            try:
                train_cfg = cfg.at_resolution(resolution)
            except ValueError as e:
                rows.append(dict(variant=variant, knobs=changes, skipped=str(e)))
                continue
            archs.setdefault(cfg.arch_id, dict(arch_id=cfg.arch_id, name=f"{name}:{variant}", knobs=changes,
                                               config=cfg.to_dict(), train_config=train_cfg.to_dict(),
                                               train_arch_id=train_cfg.arch_id, summary=train_cfg.summary()))
            rows.append(dict(variant=variant, knobs=changes, arch_id=cfg.arch_id, summary=train_cfg.summary(),
                             paper_delta=g["paper"].get(variant)))
        groups[name] = dict(note=g["note"], baseline=rows[0]["variant"], rows=rows)
    return list(archs.values()), groups


def tasks_for(archs: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Seed-major order: a cut run has every variant at the first seeds, not some at all seeds."""
    return [dict(kind="full", arch_id=a["arch_id"], seed=s) for s in seeds for a in archs]


# =============================================================================================
# analysis
# =============================================================================================
def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Per variant: mean/sd over seeds, delta vs its group's baseline on shared seeds, beyond-noise flag."""
    top1: dict[str, dict[int, float]] = {}
    for r in data["runs"]:
        if r.get("status") == "ok" and r.get("top1") is not None:
            top1.setdefault(r["arch_id"], {})[r["seed"]] = r["top1"]
    sds = [statistics.stdev(v.values()) for v in top1.values() if len(v) >= 2]
    pooled = math.sqrt(statistics.mean(s * s for s in sds)) if sds else None
    groups = {}
    for name, g in data["groups"].items():
        base_id = next((r.get("arch_id") for r in g["rows"] if r["variant"] == g["baseline"]), None)
        rows = []
        for row in g["rows"]:
            vals = top1.get(row.get("arch_id"), {})
            out = dict(variant=row["variant"], summary=row.get("summary"), paper_delta=row.get("paper_delta"),
                       n=len(vals), top1=[vals[s] for s in sorted(vals)], skipped=row.get("skipped"))
            if vals:
                out["mean"] = statistics.mean(vals.values())
                out["sd"] = statistics.stdev(vals.values()) if len(vals) >= 2 else None
            shared = sorted(set(vals) & set(top1.get(base_id, {})))
            if row.get("arch_id") != base_id and shared:
                delta = statistics.mean(vals[s] - top1[base_id][s] for s in shared)
                bound = 2 * pooled * math.sqrt(2 / len(shared)) if pooled is not None else None
                out.update(delta=delta, delta_seeds=len(shared), noise_bound=bound,
                           beyond_noise=None if bound is None else abs(delta) > bound)
                if row.get("paper_delta") is not None and row["paper_delta"] != 0:
                    out["sign_agrees"] = (delta > 0) == (row["paper_delta"] > 0)
            rows.append(out)
        groups[name] = dict(note=g["note"], baseline=g["baseline"], rows=rows)
    agree = [r["sign_agrees"] for g in groups.values() for r in g["rows"] if r.get("sign_agrees") is not None]
    return dict(gpu=data.get("device", {}).get("gpu"), dataset=data["settings"]["data"],
                preset=data["settings"]["preset"], seeds=data["settings"]["seeds"], pooled_seed_sd=pooled,
                groups=groups, sign_agreement=dict(agree=sum(agree), of=len(agree)))


def markdown(summary: dict[str, Any]) -> str:
    def f(v: Optional[float], fmt: str = "+.2f") -> str:
        return "—" if v is None else format(v, fmt)
    lines = [f"{summary['preset']} on {summary['dataset']}, seeds {summary['seeds']}, GPU {summary['gpu']}; pooled "
             f"seed sd {f(summary['pooled_seed_sd'], '.2f')}", "",
             "| group | variant | top-1 mean ± sd (n) | Δ vs baseline | beyond noise | paper Δ (ImageNet) |",
             "|---|---|---|---:|---|---:|"]
    for name, g in summary["groups"].items():
        for r in g["rows"]:
            if r.get("skipped"):
                lines.append(f"| {name} | {r['variant']} | skipped: {r['skipped'][:60]} | | | |")
                continue
            mean = f"{r['mean']:.2f} ± {f(r.get('sd'), '.2f')} ({r['n']})" if r.get("mean") is not None else "—"
            beyond = {True: "yes", False: "no", None: "—"}[r.get("beyond_noise")]
            lines.append(f"| {name} | {r['variant']} | {mean} | {f(r.get('delta'))} | {beyond} | "
                         f"{f(r.get('paper_delta'))} |")
    a = summary["sign_agreement"]
    lines.append(f"\nsign of Δ agrees with the paper's for {a['agree']} of {a['of']} variants")
    return "\n".join(lines)


# =============================================================================================
# main
# =============================================================================================
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--preset", default="faster_vit_0_224", help="the model every knob is applied to")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (comma list, >= 2 for a noise estimate)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--time-budget", type=float, default=None, help="seconds: no run starts past its estimated end")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--smoke", action="store_true", help="CPU, a tiny model, a few steps (checks the whole path)")
    return p.parse_args(argv)


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The first ground truth's recipe (``bench/groundtruth.py`` with ``EARLIER_ARGS``: the recipe of the
    committed knob-accuracy record; tiny under ``--smoke``)."""
    d = gt.parse_args(list(gt.EARLIER_ARGS))
    s = dict(data=d.data, resolution=d.resolution, epochs=d.epochs, subset=d.subset, val_subset=d.val_subset,
             batch_size=d.batch_size, lr=d.lr, weight_decay=d.weight_decay, warmup=d.warmup,
             label_smoothing=d.label_smoothing, drop_path=d.drop_path, grad_clip=d.grad_clip, amp=not d.no_amp,
             augment_crop=d.augment_crop, augment_flip=not d.no_flip, compile=d.compile, seed=None,
             easy_data=None, preset=args.preset, seeds=[int(x) for x in args.seeds.split(",") if x.strip()])
    if args.smoke:
        s.update(data="fashion-mnist", resolution=96, epochs=1.0, subset=64, val_subset=32, batch_size=16,
                 compile="eager", preset="smoke")
    return s


def main(argv: Optional[list[str]] = None) -> int:
    t0 = time.time()
    args = parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="nas-knobacc-")) / "knob-accuracy-smoke.json" if args.smoke
                       else DEFAULT_OUT)
    if args.analyze_only:
        store = gt.Store.open(out, None, None, bench=BENCH, recipe_keys=RECIPE_KEYS)
        store.data["analysis"] = summarize(store.data)
        store.save()
        print(markdown(store.data["analysis"]))
        return 0
    settings = recipe(args)
    if len(settings["seeds"]) < 2 or len(set(settings["seeds"])) != len(settings["seeds"]):
        raise SystemExit(f"error: --seeds={args.seeds!r} must name >= 2 distinct seeds (the noise estimate)")
    import torch

    from evaluators.data import load_dataset
    from search_spaces import PRESETS

    if args.smoke:
        from knobs import smoke_base

        base, args.device, args.workers = smoke_base(), args.device or "cpu", min(args.workers, 2)
    elif args.preset not in PRESETS:
        raise SystemExit(f"error: --preset={args.preset!r} is unknown; known: {', '.join(sorted(PRESETS))}")
    else:
        base = PRESETS[args.preset]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    archs, groups = plan(base, settings["preset"], settings["resolution"])
    store = gt.Store.open(out, settings, archs, bench=BENCH, recipe_keys=RECIPE_KEYS)
    store.data["groups"] = groups
    store.data.setdefault("device", {}).update(torch=torch.__version__)
    store.save()
    splits = load_dataset(settings["data"], data_dir=args.data_dir)
    print(f"{len(archs)} architectures x {len(settings['seeds'])} seeds on {splits.summary()}; results: {out}",
          flush=True)
    gt.run_tasks(store, settings, store.data["archs"], workers=args.workers, threads=1, device=device,
                 data=settings["data"], data_dir=args.data_dir, time_budget=args.time_budget, assumed_img_s=8000.0,
                 train_size=len(splits.train), val_size=len(splits.val), t0=t0,
                 tasks=tasks_for(store.data["archs"], settings["seeds"]))
    store.data["analysis"] = summarize(store.data)
    store.save()
    print(markdown(store.data["analysis"]), flush=True)
    if args.smoke:
        missing = len(tasks_for(archs, settings["seeds"])) - len(store.finished())
        print(f"smoke: {'ok' if not missing else f'FAILED, {missing} runs unfinished'} ({time.time() - t0:.0f}s)")
        return 1 if missing else 0
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
