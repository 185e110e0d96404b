"""``nas profile``: measured throughput of one network on the GPU (images/s, latency, memory, GPU state),
or, with ``--sample N --out FILE``, a dataset of N sampled configs for ``nas predictor fit``."""

from __future__ import annotations

from typing import Any, Optional

import typer

from evaluators.checks import check_int

from ._common import console, err_console, fail, load_config, print_json, user_errors

NO_GPU_EXIT = 3
# Defaults per device: the paper's protocol on a GPU; small, plain and quick on a CPU.
_GPU_DEFAULTS: dict[str, Any] = dict(batch_size=128, mode="cudagraph", dtype="fp16", warmup=3, repeats=20)
_CPU_DEFAULTS: dict[str, Any] = dict(batch_size=8, mode="eager", dtype="fp32", warmup=1, repeats=5)


def profile(
    config: Optional[str] = typer.Argument(None, metavar="[NAME|CONFIG.json]",
                                           help="Preset name or config JSON file (not with --sample)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward [GPU: 128, CPU: 8]."),
    resolution: Optional[int] = typer.Option(None, help="Override the config's (square) resolution."),
    dtype: Optional[str] = typer.Option(None, help="fp16 | bf16 (autocast AMP) | fp32 [GPU: fp16, CPU: fp32]."),
    mode: Optional[str] = typer.Option(
        None, help="cudagraph (quick, host-independent) | eager | compile (torch.compile) | best (torch.compile "
                   "with CUDA graphs, as deployed; Inductor cache in results/inductor-cache) [GPU: cudagraph, "
                   "CPU: eager]."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Keep positional MLPs and BatchNorm (as trained)."),
    no_channels_last: bool = typer.Option(False, "--no-channels-last", help="Contiguous (NCHW) memory format."),
    pad_channels: Optional[int] = typer.Option(
        None, "--pad-channels", metavar="N", help="After the deploy step, zero-pad the widths and attention head "
        "dims to multiples of N (8: tensor cores, fused attention; same outputs). Default: off."),
    gelu_epilogue: bool = typer.Option(
        False, "--gelu-epilogue", help="After the deploy step (and the padding), run each MLP's fc1 -> GELU as one "
        "GEMM with a bias+GELU epilogue (search_spaces.fuse_gelu_epilogue; tanh-approximate GELU on CUDA, exact "
        "on the CPU). Default: off."),
    device: str = typer.Option("cuda", help="cuda | cuda:N | cpu."),
    warmup: Optional[int] = typer.Option(None, help="Warm-up forward passes [GPU: 3, CPU: 1]."),
    repeats: Optional[int] = typer.Option(None, help="Timed samples [GPU: 20, CPU: 5]."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON record instead of a table."),
    sample: Optional[int] = typer.Option(None, "--sample", help="Profile N configs sampled from --space "
                                         "(a dataset for `nas predictor fit`); needs --out."),
    out: Optional[str] = typer.Option(None, "--out", help="JSON-lines dataset file of --sample (appended to; "
                                      "configs already in it are skipped, so a cut run resumes)."),
    space: str = typer.Option("default", help="With --sample: built-in space name or YAML file."),
    resolutions: str = typer.Option("160-512", help="With --sample: resolutions drawn from, e.g. 160-512 "
                                    "(steps of 32), 160-512:16 or 224,256."),
    seed: int = typer.Option(0, help="With --sample: seed of the config sample."),
) -> None:
    """Images/s (median, min, max, CV), latency, batch-1 latency, peak memory and GPU clocks of one network.

    With --sample N --out FILE: the same measurement of N configs of a search space at several
    resolutions, one JSON record per line (GPU, driver, torch, date in each), for `nas predictor fit`.
    """
    from evaluators.profiler import NoGPUError, measure_throughput, resolve_device

    if (sample is None) == (config is None):
        fail("give one network (NAME|CONFIG.json) or --sample N --out FILE, not both" if config
             else "missing NAME|CONFIG.json (or --sample N --out FILE to collect a dataset)")
    cfg = load_config(config) if config is not None else None
    try:
        with user_errors():
            dev = resolve_device(device)
    except NoGPUError:
        fail("no CUDA GPU was found (torch.cuda.is_available() is False); add --device cpu to measure on the CPU "
             "(CPU numbers are not the paper's GPU protocol)", code=NO_GPU_EXIT)
    defaults = _GPU_DEFAULTS if dev.type == "cuda" else _CPU_DEFAULTS
    chosen = dict(batch_size=batch_size, mode=mode, dtype=dtype, warmup=warmup, repeats=repeats)
    options: dict[str, Any] = {k: defaults[k] if v is None else v for k, v in chosen.items()}
    if pad_channels is not None and no_deploy:
        fail(f"--pad-channels {pad_channels} pads the deployed model: drop --no-deploy (or --pad-channels)")
    if gelu_epilogue and no_deploy:
        fail("--gelu-epilogue fuses the deployed model's MLPs: drop --no-deploy (or --gelu-epilogue)")
    if sample is not None:
        if resolution is not None or as_json:
            fail("--resolution and --json are for one network; with --sample use --resolutions (records go to --out)")
        if pad_channels is not None:
            fail(f"--pad-channels {pad_channels} is for one network: --sample collects a dataset for `nas predictor "
                 "fit`, and predictors are fitted unpadded (a dataset's records are not keyed by padding)")
        if gelu_epilogue:
            fail("--gelu-epilogue is for one network: --sample collects a dataset for `nas predictor fit`, and "
                 "predictors are fitted unfused (a dataset's records are not keyed by the GELU epilogue)")
        _sample(sample, out, space=space, resolutions=resolutions, seed=seed, dev=dev, deploy=not no_deploy,
                channels_last=not no_channels_last, **options)
        return
    if dev.type == "cpu":
        err_console.print(f"note: measuring on the CPU ({options['mode']}, {options['dtype']}, batch "
                          f"{options['batch_size']}); CPU numbers are not the paper's protocol "
                          "(GPU, batch 128, fp16 AMP)", highlight=False)
    assert cfg is not None and config is not None  # one network (checked above)
    with user_errors():
        record = measure_throughput(cfg, resolution=resolution, deploy=not no_deploy,
                                    channels_last=not no_channels_last, device=dev, pad_channels=pad_channels,
                                    gelu_epilogue=gelu_epilogue, **options)
    if as_json:
        print_json(record.to_dict())
    else:
        _print_table(config, record)
    if record.error:
        fail(f"measurement failed: {record.error}", code=1)


def _sample(n: int, out: Optional[str], *, space: str, resolutions: str, seed: int, dev: Any, **options: Any) -> None:
    from evaluators.predictor_dataset import collect, parse_resolutions, sample_configs
    with user_errors():
        check_int("--sample", n, minimum=1)
        if not out:
            raise ValueError("--sample needs --out FILE (the JSON-lines dataset to append to)")
        configs = sample_configs(space, n, seed=seed, resolutions=parse_resolutions(resolutions))
    err_console.print(f"profiling {n} config(s) of space {space!r} at {resolutions} px on "
                      f"{'cpu' if dev.type == 'cpu' else dev} ({options['mode']}, {options['dtype']}, batch "
                      f"{options['batch_size']}) into {out}", highlight=False)

    def line(i: int, total: int, rec: dict) -> None:
        value = f"{rec['images_per_s']:,.1f} img/s" if rec.get("images_per_s") else f"error: {rec.get('error')}"
        err_console.print(f"[{i + 1}/{total}] {rec['resolution'][0]} px {rec['model'][:60]}: {value}", highlight=False)

    with user_errors():
        counts = collect(configs, out, device=dev, progress=line, **options)
    console.print(f"{out}: {counts['measured']} measured, {counts['skipped']} already there, "
                  f"{counts['failed']} failed (kept with their error)", highlight=False)


def _print_table(name: str, r: Any) -> None:
    from rich.table import Table

    def num(value: Optional[float], fmt: str, unit: str = "") -> str:
        return "-" if value is None else f"{value:{fmt}}{unit}"

    t = Table("measure", "value", title=f"{name}  ({r.model})", title_justify="left")
    t.add_row("device", r.gpu_name if r.device == "cuda" else f"cpu ({r.cpu_name})")
    t.add_row("settings", f"{r.mode}, {r.dtype}, batch {r.batch_size}, {r.resolution[0]}x{r.resolution[1]}, "
                          f"{'deploy' if r.deploy else 'no deploy'}, "
                          f"{'channels_last' if r.channels_last else 'contiguous'}")
    if r.pad_channels is not None:
        t.add_row("channel padding", padding_summary(r))
    if r.gelu_epilogue:
        t.add_row("GELU epilogue", gelu_summary(r))
    t.add_row("images/s (median)", num(r.images_per_s, ",.1f"))
    t.add_row("images/s (min / max)", f"{num(r.images_per_s_min, ',.1f')} / {num(r.images_per_s_max, ',.1f')}")
    t.add_row("CV over samples", num(None if r.cv is None else 100 * r.cv, ".2f", " %"))
    t.add_row("latency per batch", num(r.latency_ms, ".3f", " ms"))
    t.add_row("latency, batch 1", num(r.latency_b1_ms, ".3f", " ms"))
    t.add_row("peak GPU memory", num(r.peak_mem_mb, ",.0f", " MiB"))
    if r.compile_s is not None:
        t.add_row("compile time", num(r.compile_s, ".1f", " s"))
    if r.device == "cuda":
        t.add_row("driver", r.driver or "-")
        t.add_row("SM clock (median / max)", f"{num(r.sm_clock_mhz, 'd')} / {num(r.max_sm_clock_mhz, 'd')} MHz")
        t.add_row("temperature (max)", num(r.temperature_c, "d", " °C"))
        t.add_row("power (median)", num(r.power_w, ".0f", " W"))
        t.add_row("throttle reasons", ", ".join(r.throttle_reasons) or "none")
        if r.nvml_error:
            t.add_row("NVML", r.nvml_error)
    t.add_row("samples", f"{r.repeats} x {num(r.iters_per_sample, 'd')} forward(s), warm-up {r.warmup}")
    t.add_row("wall time", num(r.wall_s, ".2f", " s"))
    if r.error:
        t.add_row("error", r.error)
    console.print(t)


def padding_summary(r: Any, most: int = 6) -> str:
    """What ``--pad-channels`` padded, in one line (every part, with the reasons, is in ``--json``)."""
    if r.channels_padded is None:  # the measurement failed before the padding step
        return f"to multiples of {r.pad_channels}: not reached"
    changes = [f"{p['part']} {p['real']}→{p['padded']}" for p in r.channels_padded]
    shown = ", ".join(changes[:most]) + (f" and {len(changes) - most} more" if len(changes) > most else "")
    kept = ", ".join(k["part"] for k in r.channels_kept or [])
    return (f"to multiples of {r.pad_channels}: {shown or 'nothing to pad'}"
            + (f"; kept as they are: {kept} (reasons: --json)" if kept else ""))


def gelu_summary(r: Any) -> str:
    """What ``--gelu-epilogue`` fused and kept, in one line (every part, with the reasons, is in ``--json``)."""
    if r.gelu_fused is None:  # the measurement failed before the fusion step
        return "not reached"
    kept = ", ".join(k["part"] for k in r.gelu_kept or [])
    return (f"{r.gelu_fused} MLP(s) fused (fc1 + bias + GELU in one GEMM)"
            + (f"; kept as they are: {kept} (reasons: --json)" if kept else ""))
