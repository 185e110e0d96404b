"""FasterViT against the paper's Table 1 peers on this machine: the paper's Figure 1, re-measured.

    >>> from nas.compare import CompareSettings, run_compare
    >>> result = run_compare(CompareSettings(models=("faster_vit_0_224", "Swin-T"), device="cpu"))  # doctest: +SKIP

Every model is measured with ``evaluators.profiler.measure_throughput`` under one protocol (batch,
dtype, mode, channels-last; the search's defaults): FasterViT-0..6 from our generator (deployed,
as a search measures them; with ``pad_channels`` also channel-padded, with ``gelu_epilogue`` their
MLPs' fc1 -> GELU fused into one GEMM), with ``official`` also NVIDIA's code (never padded nor
fused: its profiler record says why), and each Table 1 peer that timm
builds, with random weights (throughput does not depend on them) at the resolution Table 1 gives.
Params are counted on the built model and FLOPs with ``torch.utils.flop_counter.FlopCounterMode``
(MACs of convolutions, matrix products and attention; one image) the same way for every model.
Top-1 is the paper's (ImageNet-1K): nothing is trained here.

Published numbers live in ``nas/data/fastervit_paper.json`` (Table 1, S.2, S.3; the source of each).
A model that cannot be built, runs out of memory, or fails to measure is a recorded skip with its
reason; the run goes on. The record keys of the JSON are the fields of ``ModelRow``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from evaluators import profiler  # its functions are looked up when called (tests replace them)
from evaluators.checks import check_int
from evaluators.jsonfile import atomic_write_text
from search_spaces import PRESETS, FasterViT

from .estimators import build_estimator
from .settings import EstimatorOptions

__all__ = ["Published", "load_published", "paper_tables", "CompareSettings", "ModelRow", "CompareResult",
           "resolve_models", "run_compare", "pareto_front", "count_macs", "DATA_FILE"]

DATA_FILE = "data/fastervit_paper.json"
SCHEMA = "nas-compare/1"


# ------------------------------------------------------------------------------------------ published
@dataclass(frozen=True)
class Published:
    """One row of the paper's Table 1 (``preset`` for FasterViT, ``timm_id`` for a peer; None: timm has none)."""

    name: str
    family: str
    resolution: int
    params_m: float
    gflops: float
    a100_img_s: float
    top1: float
    source: str
    default: bool
    preset: Optional[str] = None
    timm_id: Optional[str] = None
    note: Optional[str] = None

    @property
    def is_fastervit(self) -> bool:
        return self.family == "fastervit"


def _data() -> dict[str, Any]:
    return json.loads((resources.files("nas") / DATA_FILE).read_text(encoding="utf-8"))


def load_published() -> list[Published]:
    """Table 1 of the FasterViT paper, as shipped in the package data file."""
    return [Published(**row) for row in _data()["table1"]]


def paper_tables() -> dict[str, Any]:
    """Tables S.2 and S.3 (paper ratios and the variants that express them in each code)."""
    d = _data()
    return {"S.2": d["table_s2"], "S.3": d["table_s3"]}


def resolve_models(spec: Optional[Sequence[str]]) -> list[Published]:
    """Names (``Swin-T``), presets (``faster_vit_0_224``), timm ids, ``fastervit``, ``peers``, ``all``;
    None: FasterViT-0..6 and the peers the default set names. Unknown names are one error listing the choices."""
    table = load_published()
    if not spec:
        return [p for p in table if p.default]
    out: list[Published] = []
    for raw in spec:
        key = raw.strip()
        low = key.lower()
        if low == "all":
            picked = table
        elif low == "fastervit":
            picked = [p for p in table if p.is_fastervit]
        elif low == "peers":
            picked = [p for p in table if not p.is_fastervit and p.default]
        else:
            picked = [p for p in table if low in {p.name.lower(), (p.preset or "").lower(), (p.timm_id or "").lower()}]
            if not picked:
                names = ", ".join(p.name for p in table)
                raise ValueError(f"--models: unknown model {key!r}; use all, fastervit, peers, or one of: {names}")
        out += [p for p in picked if p not in out]
    return out


# ------------------------------------------------------------------------------------------ settings
@dataclass
class CompareSettings:
    """What ``nas compare`` takes; None means "choose for the device" (``resolved``)."""

    models: Optional[Sequence[str]] = None
    device: Optional[str] = None
    batch_size: Optional[int] = None
    dtype: Optional[str] = None
    modes: Optional[Sequence[str]] = None
    warmup: Optional[int] = None
    repeats: Optional[int] = None
    official: bool = False
    tables: bool = False
    seed: int = 0
    proxy: Optional[str] = None  # an accuracy estimator (e.g. supernet:DIR) scoring our FasterViT rows
    pad_channels: Optional[int] = None  # our FasterViT rows: widths and head dims zero-padded to multiples of this
    gelu_epilogue: bool = False  # our FasterViT rows: each MLP's fc1 -> GELU as one GEMM with a bias+GELU epilogue

    def resolved(self) -> "CompareSettings":
        """GPU: the search's protocol (batch 128, fp16, CUDA graphs, 3 warm-up, 10 samples); CPU: tiny (checks only)."""
        s = dataclasses.replace(self)
        if s.device is None:
            s.device = profiler.resolve_device(None).type  # the one default-device picker
        if s.device not in ("cuda", "cpu"):
            raise ValueError(f"device={s.device!r} must be 'cuda' or 'cpu'")
        gpu = s.device == "cuda"
        if gpu and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA GPU is available; use --device cpu (tiny batch, for checks)")
        s.batch_size = s.batch_size or (128 if gpu else 2)
        s.dtype = s.dtype or ("fp16" if gpu else "fp32")  # CPU autocast to fp16 is slower than fp32: checks only
        s.modes = tuple(s.modes or (("cudagraph",) if gpu else ("eager",)))
        bad = [m for m in s.modes if m not in profiler.MODES]
        if bad:
            raise ValueError(f"--mode {','.join(bad)}: each mode must be one of {', '.join(profiler.MODES)}")
        if "cudagraph" in s.modes and not gpu:
            raise ValueError("mode 'cudagraph' needs a CUDA device; on the CPU use --mode eager or compile")
        s.warmup = s.warmup if s.warmup is not None else (3 if gpu else 1)
        s.repeats = s.repeats or (10 if gpu else 2)
        for name in ("batch_size", "repeats", "warmup"):
            if getattr(s, name) < 1:
                raise ValueError(f"{name}={getattr(s, name)} must be >= 1")
        check_int("--pad-channels", s.pad_channels, minimum=1, optional=True)
        if not isinstance(s.gelu_epilogue, bool):
            raise ValueError(f"--gelu-epilogue={s.gelu_epilogue!r} must be true or false")
        return s

    @property
    def protocol(self) -> "Protocol":
        """The measurement protocol of resolved settings (``resolved`` fills every field)."""
        s = self
        if s.batch_size is None or s.dtype is None or not s.modes or s.warmup is None or s.repeats is None \
                or s.device is None:
            raise ValueError("CompareSettings.resolved() chooses the protocol for the device: call it first")
        return Protocol(s.device, s.batch_size, s.dtype, tuple(s.modes), s.warmup, s.repeats)


@dataclass(frozen=True)
class Protocol:
    """How every model is measured: device, batch, dtype, modes (the first is the primary one), warm-up, samples."""

    device: str
    batch_size: int
    dtype: str
    modes: tuple[str, ...]
    warmup: int
    repeats: int


@dataclass
class ModelRow:
    """One model measured in one mode (``error``: why it has no throughput: a recorded skip)."""

    name: str
    family: str
    code: str  # "nas" (our generator) | "official" (NVIDIA's fastervit) | "timm"
    model_id: str
    resolution: int
    mode: str
    params_m: Optional[float] = None
    gmacs: Optional[float] = None
    paper_params_m: Optional[float] = None
    paper_gflops: Optional[float] = None
    img_s: Optional[float] = None
    paper_a100_img_s: Optional[float] = None
    ratio: Optional[float] = None
    top1: Optional[float] = None
    deploy: Optional[bool] = None
    error: Optional[str] = None
    note: Optional[str] = None
    profile: Optional[dict[str, Any]] = None
    estimate: Optional[float] = None  # the --proxy estimator's accuracy of this architecture (our rows)
    estimate_error: Optional[str] = None

    @property
    def measured(self) -> bool:
        return self.img_s is not None and self.error is None


@dataclass
class CompareResult:
    settings: dict[str, Any]
    environment: dict[str, Any]
    rows: list[ModelRow]
    front: list[str]
    dominated: dict[str, list[str]]
    tables: Optional[dict[str, Any]] = None
    estimate_label: Optional[str] = None  # what ``ModelRow.estimate`` is (--proxy), e.g. "top-1 % (supernet, ...)"
    wall_s: float = 0.0
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d = dict(schema=SCHEMA, benchmark="compare", gpu=self.environment.get("gpu"), **d)
        d["skipped"] = [dict(name=r.name, code=r.code, model_id=r.model_id, mode=r.mode, reason=r.error)
                        for r in self.rows if r.error]
        d["published_source"] = _data()["source"]
        d["flops_method"] = ("torch.utils.flop_counter.FlopCounterMode on one image, divided by 2 (MACs of "
                             "convolutions, matrix products and attention; the paper's GFLOPs are MACs too)")
        if self.settings.get("pad_channels"):
            d["flops_method"] += "; our FasterViT rows counted unpadded (the architecture's MACs, not its zeros')"
        if self.settings.get("gelu_epilogue"):
            d["flops_method"] += ("; our FasterViT rows counted unfused (FlopCounterMode has no rule for the fused "
                                  "GEMM+GELU op; the MACs are the same)")
        return d


# ------------------------------------------------------------------------------------------ building
def _build(p: Published, code: str, device: Any, seed: int) -> Any:
    """The module to measure (random weights; built on the device)."""
    if code in ("official", "nas") and not p.preset:
        raise ValueError(f"{p.name} has no FasterViT preset to build")
    if code == "official":
        return profiler.build_official(str(p.preset), device=device, seed=seed)
    with profiler._seeded(device, seed), torch.device(device):
        if code == "nas":
            return FasterViT(PRESETS[str(p.preset)]).eval()
        import timm

        return timm.create_model(str(p.timm_id), pretrained=False).eval()


def count_macs(model: Any, resolution: int, device: Any) -> int:
    """Multiply-accumulates of one forward pass on one image (``FlopCounterMode`` FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, resolution, resolution, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops() // 2)


def _jobs(models: Sequence[Published], s: CompareSettings) -> list[tuple[Published, str]]:
    jobs = []
    for p in models:
        if p.is_fastervit:
            jobs.append((p, "nas"))
            if s.official:
                jobs.append((p, "official"))
        else:
            jobs.append((p, "timm"))
    return jobs


def _deploy_steps(code: str, s: CompareSettings) -> dict[str, Any]:
    """``pad_channels`` and ``gelu_epilogue`` for the profiler: ours padded / fused; the official code gets them
    too, so its record says why it is measured as it is; timm peers have no deploy step to follow."""
    if code == "timm":
        return {}
    steps: dict[str, Any] = dict(pad_channels=s.pad_channels) if s.pad_channels is not None else {}
    return dict(steps, gelu_epilogue=True) if s.gelu_epilogue else steps


def _architecture_macs(p: Published, dev: Any, s: CompareSettings) -> int:
    """MACs of our FasterViT as designed (deployed, not padded nor fused): a padded model also multiplies its zero
    channels, and FlopCounterMode does not count the fused GEMM+GELU op."""
    return count_macs(_build(p, "nas", dev, s.seed).switch_to_deploy(), p.resolution, dev)


def _measure_one(p: Published, code: str, s: CompareSettings) -> list[ModelRow]:
    """All modes of one model; every failure is a row with ``error`` (the run goes on)."""
    res = p.resolution
    pr = s.protocol
    model_id = p.timm_id if code == "timm" else (f"official:{p.preset}" if code == "official" else p.preset)
    base: dict[str, Any] = dict(name=p.name, family=p.family if code != "official" else "fastervit-official", code=code,
                model_id=model_id or "—", resolution=res, paper_params_m=p.params_m, paper_gflops=p.gflops,
                paper_a100_img_s=p.a100_img_s, top1=p.top1, note=p.note)
    if code == "timm" and not p.timm_id:
        return [ModelRow(**base, mode=m, error=f"not built: {p.note or 'timm has no such model'}") for m in pr.modes]
    dev = profiler.resolve_device(s.device)
    try:
        model = _build(p, code, dev, s.seed)
    except torch.cuda.OutOfMemoryError:
        _free()
        return [ModelRow(**base, mode=m, error=f"out of memory while building at {res} px") for m in pr.modes]
    except Exception as e:  # a peer timm or the official code cannot build here: a recorded skip
        _free()
        return [ModelRow(**base, mode=m, error=f"not built: {type(e).__name__}: {e}") for m in pr.modes]
    params = round(sum(t.numel() for t in model.parameters()) / 1e6, 3)
    gmacs: Optional[float] = None
    rows = []
    for i, mode in enumerate(pr.modes):
        if i and code != "timm":  # deployed in place by the previous mode: measure a fresh one
            model = _build(p, code, dev, s.seed)
        row = ModelRow(**base, mode=mode, params_m=params, deploy=code != "timm")
        try:
            # timm peers have no deploy step; ours and the official code precompute their biases (as a search does)
            rec = profiler.measure_throughput(model, batch_size=pr.batch_size, resolution=res, dtype=pr.dtype,
                                              mode=mode, warmup=pr.warmup, repeats=pr.repeats, device=dev,
                                              latency_b1=False, seed=s.seed, deploy=code != "timm",
                                              **_deploy_steps(code, s))
        except Exception as e:  # a model this mode cannot run (e.g. a refused capture): recorded, the run goes on
            row.error = f"{mode} failed: {type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            _free()
            continue
        row.profile = rec.to_dict()
        if rec.error or rec.images_per_s is None:
            row.error = rec.error or "no throughput measured"
        else:
            row.img_s = rec.images_per_s
            row.ratio = float(f"{rec.images_per_s / p.a100_img_s:.4g}")
        if gmacs is None:  # counted on the model as measured (deployed where it has a deploy step; not padded/fused)
            try:
                changed = (s.pad_channels is not None or s.gelu_epilogue) and code == "nas"
                gmacs = round((_architecture_macs(p, dev, s) if changed else count_macs(model, res, dev)) / 1e9, 3)
            except torch.cuda.OutOfMemoryError:
                gmacs = None
        rows.append(row)
    for r in rows:
        r.gmacs = gmacs
    del model
    _free()
    return rows


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ front
def pareto_front(rows: Sequence[ModelRow]) -> tuple[list[str], dict[str, list[str]]]:
    """Models on this card's front of (throughput, top-1), both maximised; for each FasterViT of our
    generator off the front, the models that dominate it."""
    pts = [r for r in rows if r.measured and r.top1 is not None and r.code != "official"]
    point = {id(r): (float(r.img_s or 0.0), float(r.top1 or 0.0)) for r in pts}  # both set: measured, with a top-1

    def dominates(a: ModelRow, b: ModelRow) -> bool:
        (ai, at), (bi, bt) = point[id(a)], point[id(b)]
        return ai >= bi and at >= bt and (ai > bi or at > bt)

    front = [r.name for r in sorted(pts, key=lambda r: -point[id(r)][0]) if not any(dominates(o, r) for o in pts)]
    dominated = {r.name: [o.name for o in pts if dominates(o, r)] for r in pts
                 if r.family == "fastervit" and r.name not in front}
    return front, dominated


# ------------------------------------------------------------------------------------------ tables
def _variant_jobs(tables: dict[str, Any], s: CompareSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(table, variant, {code: overrides or None}) in measuring order; references first."""
    out: list[tuple[str, str, dict[str, Any]]] = [("S.2", "FasterViT-2", {"nas": {}, "official": {}})]
    for r in tables["S.2"]["rows"]:
        out.append(("S.2", r["component"], {"nas": r["nas"], "official": r["official"]}))
    for r in tables["S.3"]["rows"]:
        out.append(("S.3", r["variant"], {"nas": r["nas"], "official": r["official"]}))
    return out


def _variant_img_s(code: str, over: dict[str, Any], s: CompareSettings, mode: str
                   ) -> tuple[Optional[float], Optional[str]]:
    pr = s.protocol
    kw: dict[str, Any] = dict(batch_size=pr.batch_size, dtype=pr.dtype, mode=mode, warmup=pr.warmup,
                              repeats=pr.repeats, device=pr.device, latency_b1=False, seed=s.seed,
                              **_deploy_steps(code, s))
    try:
        if code == "nas":
            changes = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
            cfg = PRESETS["faster_vit_2_224"].replace(**changes)
            rec = profiler.measure_throughput(cfg, **kw)
        else:
            rec = profiler.measure_official("faster_vit_2_224", model_kwargs=over, **kw)
    except torch.cuda.OutOfMemoryError:
        return None, "out of memory"
    except Exception as e:  # a variant one code cannot express or build: recorded
        return None, f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        _free()
    return (rec.images_per_s, None) if not rec.error else (None, rec.error)


def measure_tables(s: CompareSettings, step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Tables S.2 and S.3 on this machine: each variant's throughput ratio, for our generator and the official code."""
    tables = paper_tables()
    mode = s.protocol.modes[0]
    codes = ("nas", "official") if s.official else ("nas",)
    img: dict[tuple[str, str, str], tuple[Optional[float], Optional[str]]] = {}
    for table, variant, overrides in _variant_jobs(tables, s):
        for code in codes:
            over = overrides[code]
            step(f"Table {table}: {variant} ({code})")
            img[(table, variant, code)] = ((None, "not expressible") if over is None
                                           else _variant_img_s(code, over, s, mode))
    out: dict[str, Any] = {}
    references: tuple[tuple[str, Callable[[Any], str]], ...] = (
        ("S.2", lambda r: "FasterViT-2"), ("S.3", lambda r: tables["S.3"]["reference"][str(r["resolution"])]))
    for key, ref_of in references:
        t = tables[key]
        rows = []
        for r in t["rows"]:
            name = r.get("component") or r["variant"]
            row = dict(name=name, paper_ratio=r["ratio"], why=r.get("why"), note=r.get("note"))
            for code in codes:
                v, err = img[(key, name, code)]
                ref, ref_err = img[(key, ref_of(r), code)]
                row[f"{code}_img_s"] = v
                row[f"{code}_ratio"] = round(v / ref, 3) if v and ref else None
                row[f"{code}_error"] = err or (f"reference: {ref_err}" if ref_err else None)
            rows.append(row)
        out[key] = dict(title=t["title"], model=t["model"], ratio=t["ratio"], mode=mode, rows=rows, source=t["source"],
                        note=t.get("note"))
    return out


# ------------------------------------------------------------------------------------------ run
def _environment(s: CompareSettings) -> dict[str, Any]:
    import platform

    env = dict(device=s.device, torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
               cpu=profiler.cpu_name())
    try:
        import timm

        env["timm"] = timm.__version__
    except ImportError:
        env["timm"] = None
    env["gpu"] = torch.cuda.get_device_name(0) if s.device == "cuda" else None
    return env


def run_compare(settings: CompareSettings, *,
                on_step: Optional[Callable[[str, int, int], None]] = None) -> CompareResult:
    """Measure every selected model (and, with ``tables``, the S.2/S.3 variants); ``on_step(label, done, total)``."""
    t0 = time.perf_counter()
    s = settings.resolved()
    models = resolve_models(s.models)
    jobs = _jobs(models, s)
    n_tables = (1 + len(paper_tables()["S.2"]["rows"]) + len(paper_tables()["S.3"]["rows"])) * (2 if s.official else 1)
    total = len(jobs) + (n_tables if s.tables else 0)
    done = 0

    def step(label: str) -> None:
        nonlocal done
        if on_step:
            on_step(label, done, total)
        done += 1

    rows: list[ModelRow] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid")  # the official code's, once per model
        for p, code in jobs:
            step(f"{p.name} ({'timm ' + str(p.timm_id) if code == 'timm' else code})")
            rows += _measure_one(p, code, s)
        tables = measure_tables(s, step) if s.tables else None
    label = estimate_rows(rows, s) if s.proxy else None
    primary = [r for r in rows if r.mode == s.protocol.modes[0]]
    front, dominated = pareto_front(primary)
    if on_step:
        on_step("done", total, total)
    settings_d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(s).items()}
    settings_d["channels_last"] = True
    return CompareResult(settings=settings_d, environment=_environment(s), rows=rows, front=front, dominated=dominated,
                         tables=tables, estimate_label=label, wall_s=round(time.perf_counter() - t0, 1))


def estimate_rows(rows: Sequence[ModelRow], s: CompareSettings) -> str:
    """Score our FasterViT rows with the ``s.proxy`` estimator (e.g. a supernet of the default space); returns
    its label. An architecture it cannot score (FasterViT-4..6 outside that space) records why."""
    est = build_estimator(EstimatorOptions(proxy=str(s.proxy), proxy_resolution=224, proxy_batch_size=16))
    est.prepare(device=str(s.device), seed=s.seed)
    scores: dict[str, tuple[Optional[float], Optional[str]]] = {}
    for r in rows:
        if r.code != "nas":
            continue
        if r.model_id not in scores:
            e = est.estimate(PRESETS[r.model_id], seed=s.seed)
            scores[r.model_id] = (None, e.failure) if e.failure else (round(e.value, 3), None)
        r.estimate, r.estimate_error = scores[r.model_id]
    return est.label


def save_json(result: dict[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(result, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def rows_from_json(d: dict[str, Any]) -> list[ModelRow]:
    names = {f.name for f in dataclasses.fields(ModelRow)}
    return [ModelRow(**{k: v for k, v in r.items() if k in names}) for r in d["rows"]]
