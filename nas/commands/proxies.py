"""``nas proxies``: zero-cost accuracy proxies of one network on a batch of real images."""

from __future__ import annotations

from typing import Optional

import typer

from ._common import console, fail, load_config, print_json, user_errors


def proxies(
    config: str = typer.Option(..., "--config", metavar="NAME|CONFIG.json", help="Preset name or config JSON file."),
    data: Optional[str] = typer.Option(None, help="Dataset: fashion-mnist (default), cifar10, cifar100, "
                                       "imagefolder:PATH... (a supernet:DIR estimator: its own data by default)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder holding the dataset files."),
    download: bool = typer.Option(False, "--download", help="Download the dataset with torchvision if missing."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images in the scoring batch."),
    resolution: Optional[int] = typer.Option(
        None, help="Score the architecture at this (square) resolution (windows per side kept); default: the "
                   "config's."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    seed: int = typer.Option(0, help="Seed of the model's initialisation and of the batch."),
    proxy: Optional[list[str]] = typer.Option(None, "--proxy", help="Proxy to compute (repeatable); default: all."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON dict instead of a table."),
) -> None:
    """Every zero-cost proxy's value (higher = better) and time on a freshly initialised network."""
    from rich.table import Table

    from evaluators.data import load_dataset, normalization, sample_batch
    from evaluators.estimators import ZeroCostEstimator
    from evaluators.profiler import NoGPUError, resolve_device
    from evaluators.proxies import PROXIES, compute_proxies, get_proxy, init_model
    from nas.estimators import canonical_proxy, estimator_type

    cfg = load_config(config)
    asked = list(proxy) if proxy else list(PROXIES)
    names = [n for n in asked if estimator_type(n) is ZeroCostEstimator]
    others = [canonical_proxy(n) for n in asked if estimator_type(n) is not ZeroCostEstimator]
    with user_errors():
        for n in names:
            get_proxy(n)
        if batch_size < 2:
            raise ValueError(f"--batch-size={batch_size} must be >= 2 (naswot and jacob_cov compare images)")
        try:
            device = str(resolve_device(device))  # the one default-device rule (evaluators.profiler)
        except NoGPUError as e:
            fail(f"--device {device}: {e}")
        if resolution is not None:
            cfg = cfg.at_resolution(resolution)
        splits = load_dataset(data or "fashion-mnist", data_dir=data_dir, download=download)
        cfg = cfg.replace(num_classes=splits.num_classes)
        model = init_model(cfg, seed, device=device)
        mean, std = normalization(model)
        batch = sample_batch(splits.train, batch_size=batch_size, resolution=cfg.resolution, seed=seed, device=device,
                             mean=mean, std=std)
    results = compute_proxies(model, names, batch, device=device, seed=seed)
    with user_errors():
        results.update(_estimates(others, cfg, data=data, data_dir=data_dir, batch_size=batch_size, device=device,
                                  seed=seed))
    if as_json:
        print_json(dict(config=config, arch_id=cfg.arch_id, resolution=list(cfg.resolution), data=splits.name,
                        batch_size=batch_size, seed=seed, device=str(device),
                        proxies={n: r.to_dict() for n, r in results.items()}))
    else:
        console.print(f"[bold]{config}[/]  arch_id {cfg.arch_id}  {cfg.summary()}", highlight=False)
        console.print(f"{splits.summary()}; batch {batch_size} at {cfg.resolution[0]}x{cfg.resolution[1]}, "
                      f"seed {seed}, device {device}; higher = better for every proxy", highlight=False)
        t = Table("proxy", "value", "seconds", "error")
        for n, r in results.items():
            t.add_row(n, "" if r.value is None else f"{r.value:.6g}", f"{r.seconds:.3f}", r.error or "")
        console.print(t)
    failed = [n for n, r in results.items() if not r.ok]
    if failed and len(failed) == len(results):
        fail(f"every proxy failed (first: {results[failed[0]].error})", code=1)


def _estimates(proxies: list[str], cfg, *, data: Optional[str], data_dir: Optional[str], batch_size: int, device: str,
               seed: int) -> dict:
    """Registered accuracy estimators named with --proxy (e.g. supernet:DIR) on ``cfg``, as proxy results."""
    from evaluators.proxies import ProxyResult
    from nas.estimators import build_estimator
    from nas.settings import EstimatorOptions

    out = {}
    for name in proxies:
        est = build_estimator(EstimatorOptions(proxy=name, data=data or EstimatorOptions.data, data_dir=data_dir,
                                               proxy_resolution=cfg.resolution[0], proxy_batch_size=batch_size))
        est.prepare(device=device, seed=seed)
        e = est.estimate(cfg, seed=seed)
        out[name] = ProxyResult(name=name, value=None if e.failure else e.value, seconds=e.seconds, error=e.failure)
    return out
