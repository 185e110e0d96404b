#!/usr/bin/env python
"""Throughput effect of every architecture knob on FasterViT-2, beside the paper's ratios.

Three groups, each timed against its own baseline (ratio = variant images/s / baseline images/s):

- ``table_s2``: the paper's component ablation (Table S.2, FasterViT-2, A100). Baseline:
  FasterViT-2 with carrier-token propagation (our reading of the paper's baseline, as in
  ``bench/throughput.py``; the released FV-2 has none, so ``no_ct_propagation`` is the released
  model). Rows: HAT block, CT attention, attention bias, CT propagation, 1D pos bias, CT
  initialisation removed, and one 14x14 window in stage 3.
- ``table_6``: stage-3/4 attention replaced (Table 6): Twins and EdgeViT against HAT, on the
  released FasterViT-2 (and FV-0/FV-1 with ``--table6-models 0,1,2``).
- ``proposals``: the course reproduction's proposals on the released FasterViT-2 (CT gate,
  hybrid stem, window overlap 1 and 2, 5x5 CT-init kernel); the paper has no numbers for them.

Protocol: the project's profiler (``evaluators.profiler.measure_throughput``), CUDA-graph mode,
batch 128, 224 px, fp16 autocast, deployed, channels-last. ``--rounds`` (default 2) measures every
distinct architecture once per round, the second round in reverse order, so that slow drift of
the GPU shows up as a round-to-round difference instead of a bias; a ratio uses the median over
rounds. Params and FLOPs come from the analytic model (``evaluators.cost``; no fvcore needed).

Run on the GPU machine from the repository root (about 2-3 minutes on one H200; ``--time-budget``
stops starting new measurements and writes what is done)::

    PYTHONPATH=. python bench/knobs.py --out results/benchmarks/knobs.json

``--smoke`` runs everything on the CPU with a tiny model (seconds): it checks the script, not speed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing

import torch  # noqa: E402

warnings.filterwarnings("ignore", message="torch.meshgrid")

from evaluators.cost import analytic_flops, analytic_params  # noqa: E402
from evaluators.profiler import cpu_name, measure_throughput, resolve_device  # noqa: E402
from search_spaces import PRESETS, FasterViTConfig  # noqa: E402

#: Table S.2 (FasterViT-2, A100): throughput of each variant relative to the baseline; None: not given
PAPER_S2 = {"no_hat": 1.08, "no_ct_attention": 1.00, "no_attn_bias": 1.00, "no_ct_propagation": 0.93,
            "no_pos_bias_1d": 1.00, "no_ct_init": 1.00, "window14_stage3": 0.90}
#: Table 6 (A100 img/s): (Twins, EdgeViT, HAT) per FasterViT model
PAPER_T6 = {0: (6896, 5928, 5802), 1: (4949, 4188, 4344), 2: (3668, 3127, 3161)}
NO_HAT = [False] * 4


def s2_variants(base: FasterViTConfig) -> dict[str, dict[str, Any]]:
    """Table S.2 rows as config overrides (the first is the baseline)."""
    window = list(base.window_size)
    window[2] = max(base.stages[2].feature)  # one window over the whole stage-3 map (14 at 224)
    return {
        "baseline": dict(do_propagation=True),
        "no_hat": dict(do_propagation=True, hat=NO_HAT),
        "no_ct_attention": dict(do_propagation=True, ct_attention=False),
        "no_attn_bias": dict(do_propagation=True, attn_bias=False),
        "no_ct_propagation": dict(do_propagation=False),
        "no_pos_bias_1d": dict(do_propagation=True, pos_bias_1d=False),
        "no_ct_init": dict(do_propagation=True, ct_init=False),
        "window14_stage3": dict(do_propagation=True, hat=NO_HAT, window_size=window),
    }


def t6_variants() -> dict[str, dict[str, Any]]:
    return {"hat": {}, "twins": dict(attention="twins", hat=NO_HAT), "edgevit": dict(attention="edgevit", hat=NO_HAT)}


def proposal_variants(base: FasterViTConfig) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"baseline": {}, "ct_gate": dict(ct_gate=True), "stem_hybrid": dict(stem="hybrid"),
                                      "ct_init_kernel_5": dict(ct_init_kernel=5)}
    for k in (1, 2):
        if k < base.stages[2].window:
            out[f"window_overlap_{k}"] = dict(window_overlap=k)
    return out


def smoke_base() -> FasterViTConfig:
    """A tiny FasterViT-2-shaped model for ``--smoke`` (HAT in stage 3: 2x2 windows of 3 at 96 px)."""
    return FasterViTConfig(resolution=96, dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                           window_size=(3, 3, 3, 3), ct_size=1, num_classes=10, drop_path_rate=0.0)


class Bench:
    """Measures each distinct architecture once per round and writes the JSON after each one."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = resolve_device("cpu" if args.smoke else args.device)
        if self.device.type != "cuda" and not args.smoke:
            raise SystemExit("bench/knobs.py needs a CUDA GPU (or --smoke for a CPU check)")
        self.deadline = time.monotonic() + args.time_budget
        self.options = (dict(mode="eager", dtype="fp32", batch_size=2, warmup=1, repeats=2, latency_b1=False)
                        if args.smoke else
                        dict(mode="cudagraph", dtype="fp16", batch_size=args.batch_size, warmup=3,
                             repeats=args.repeats, latency_b1=False))
        self.groups: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, FasterViTConfig] = {}  # arch_id -> config
        self.samples: dict[str, list[float]] = {}  # arch_id -> images/s per round
        self.records: dict[str, list[dict]] = {}
        self.out = Path(args.out)

    # -------------------------------------------------------------------------- planning
    def add_group(self, name: str, base: FasterViTConfig, variants: dict[str, dict[str, Any]],
                  paper: dict[str, Optional[float]], note: str) -> None:
        rows = []
        for variant, changes in variants.items():
            cfg = base.replace(**changes)
            self.configs.setdefault(cfg.arch_id, cfg)
            rows.append(dict(variant=variant, knobs=changes, arch_id=cfg.arch_id, summary=cfg.summary(),
                             params=analytic_params(cfg), flops=analytic_flops(cfg), paper_ratio=paper.get(variant)))
        self.groups[name] = dict(baseline=rows[0]["variant"], note=note, rows=rows)

    def plan(self) -> None:
        fv2 = smoke_base() if self.args.smoke else PRESETS["faster_vit_2_224"]
        self.add_group("table_s2", fv2, s2_variants(fv2), PAPER_S2,
                       "paper Table S.2 (FasterViT-2, A100): throughput ratio with the component removed")
        models = [2] if self.args.smoke else self.args.table6_models
        for i in models:
            base = fv2 if self.args.smoke else PRESETS[f"faster_vit_{i}_224"]
            tw, ev, hat = PAPER_T6[i]
            self.add_group(f"table_6_fv{i}", base, t6_variants(), dict(hat=1.0, twins=tw / hat, edgevit=ev / hat),
                           f"paper Table 6 (FasterViT-{i}, A100 img/s {tw}/{ev}/{hat}): stage-3/4 attention replaced")
        self.add_group("proposals", fv2, proposal_variants(fv2), {},
                       "course reproduction's proposals on the released FasterViT-2 (no paper numbers)")

    # -------------------------------------------------------------------------- measuring
    def run(self) -> None:
        self.plan()
        ids = list(self.configs)
        total = len(ids) * self.args.rounds
        done = 0
        for r in range(self.args.rounds):
            for arch in (ids if r % 2 == 0 else ids[::-1]):
                if time.monotonic() > self.deadline:
                    self.log(f"time budget of {self.args.time_budget:.0f} s spent: {done}/{total} measurements")
                    self.write(complete=False)
                    return
                self.measure(arch)
                done += 1
                self.log(f"[{done}/{total}] round {r + 1} {self.configs[arch].summary()}: "
                         f"{self.samples[arch][-1] if self.samples.get(arch) else 'error'} img/s")
                self.write(complete=False)
        self.write(complete=True)

    def measure(self, arch: str) -> None:
        rec = measure_throughput(self.configs[arch], device=self.device, **self.options).to_dict()
        self.records.setdefault(arch, []).append(rec)
        if rec.get("error"):
            self.log(f"{arch}: {rec['error']}")
        elif rec.get("images_per_s"):
            self.samples.setdefault(arch, []).append(rec["images_per_s"])

    def log(self, message: str) -> None:
        print(f"[knobs {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)

    # -------------------------------------------------------------------------- writing
    def _median(self, arch: str) -> Optional[float]:
        s = self.samples.get(arch)
        return statistics.median(s) if s else None

    def result(self, complete: bool) -> dict[str, Any]:
        groups = {}
        for name, g in self.groups.items():
            base = self._median(g["rows"][0]["arch_id"])
            rows = []
            for row in g["rows"]:
                med = self._median(row["arch_id"])
                ratio = med / base if med and base else None
                rows.append(dict(row, images_per_s=med, images_per_s_rounds=self.samples.get(row["arch_id"], []),
                                 ratio=ratio, ratio_minus_paper=(ratio - row["paper_ratio"]
                                                                 if ratio is not None and row["paper_ratio"] else None)))
            groups[name] = dict(g, rows=rows)
        first = next((r[0] for r in self.records.values() if r), {})
        return dict(
            benchmark="knobs", complete=complete, smoke=self.args.smoke,
            gpu=first.get("gpu_name"), driver=first.get("driver"), cpu=cpu_name(), torch=torch.__version__,
            cuda=torch.version.cuda, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            settings=dict(self.options, rounds=self.args.rounds, resolution="config (224 for FasterViT-2)",
                          deploy=True, channels_last=True),
            groups=groups,
            measurements={a: [{k: rec.get(k) for k in ("images_per_s", "cv", "peak_mem_mb", "sm_clock_mhz",
                                                      "temperature_c", "throttle_reasons", "error", "timestamp")}
                              for rec in recs] for a, recs in self.records.items()},
        )

    def write(self, complete: bool) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.result(complete), indent=2, default=_json_default) + "\n")
        tmp.replace(self.out)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def print_table(result: dict[str, Any]) -> None:
    """Markdown table of every group (for the README)."""
    print(f"\nGPU: {result['gpu'] or result['cpu']}; torch {result['torch']}\n")
    print("| group | variant | GFLOPs | img/s | ratio | paper |")
    print("|---|---|---:|---:|---:|---:|")
    for name, g in result["groups"].items():
        for r in g["rows"]:
            ips = f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-"
            ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
            paper = f"{r['paper_ratio']:.2f}" if r["paper_ratio"] is not None else "-"
            print(f"| {name} | {r['variant']} | {r['flops'] / 1e9:.2f} | {ips} | {ratio} | {paper} |")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/benchmarks/knobs.json", help="JSON to write (rewritten after each measurement)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20, help="timed samples per measurement")
    p.add_argument("--rounds", type=int, default=2, help="measurements per architecture (alternating order)")
    p.add_argument("--table6-models", type=lambda s: [int(x) for x in s.split(",")], default=[2],
                   help="FasterViT models for the Table 6 group, e.g. 0,1,2 (default 2)")
    p.add_argument("--time-budget", type=float, default=220.0, help="seconds after which no measurement starts")
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, not speed")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds={args.rounds} must be >= 1")
    bad = [i for i in args.table6_models if i not in PAPER_T6]
    if bad:
        p.error(f"--table6-models: {bad} not in Table 6 (0, 1, 2)")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    bench = Bench(args)
    bench.run()
    result = json.loads(Path(args.out).read_text())
    print_table(result)
    return result


if __name__ == "__main__":
    main()
