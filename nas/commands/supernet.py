"""``nas supernet``: train a once-for-all FasterViT supernet and read inherited accuracies off it."""

from __future__ import annotations

import os
from typing import Any, List, Optional

import typer

from ._common import console, print_json, user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_DEFAULT = "default: the trainer's"


@app.command("train")
def train_cmd(
    space: str = typer.Option(..., help="Search space: built-in name or YAML file (every knob must share weights)."),
    data: str = typer.Option(..., help="Dataset (fashion-mnist, fmnist-odd, cifar10, imagefolder:PATH, ...)."),
    epochs: float = typer.Option(..., help="Training budget E in epochs (fractions allowed)."),
    out: str = typer.Option(..., "--out", "-o", metavar="DIR",
                            help="Run folder: new, or this run's folder to resume it."),
    resolution: Optional[int] = typer.Option(None, help="Training resolution (default: the space's)."),
    batch_size: Optional[int] = typer.Option(None, help=f"Global batch size ({_DEFAULT})."),
    lr: Optional[float] = typer.Option(None, help=f"Peak AdamW learning rate at batch 256 ({_DEFAULT})."),
    warmup: Optional[float] = typer.Option(None, help=f"Fraction of the steps in linear warm-up ({_DEFAULT})."),
    weight_decay: Optional[float] = typer.Option(None, help=f"AdamW weight decay ({_DEFAULT})."),
    sandwich_n: Optional[int] = typer.Option(None, help="Random subnets per step besides the largest and "
                                                         f"smallest ({_DEFAULT})."),
    drop_path_rate: Optional[float] = typer.Option(None, help="Stochastic depth of the largest subnet "
                                                              "(default: its config's)."),
    subset: Optional[int] = typer.Option(None, help="Training images used (default: all)."),
    seed: Optional[int] = typer.Option(None, help=f"Seed of init, data order and subnet draws ({_DEFAULT})."),
    time_budget: Optional[float] = typer.Option(None, metavar="SECONDS",
                                                help="Stop, with a checkpoint, before this call takes longer; run "
                                                     "the same command again to continue (exit status 75)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop, with a checkpoint, after this many steps."),
    checkpoint_every: Optional[float] = typer.Option(None, metavar="SECONDS",
                                                     help=f"Seconds between checkpoints ({_DEFAULT})."),
    val_subset: Optional[int] = typer.Option(None, help="Validation images of the final top-1 (default: all)."),
    device: Optional[str] = typer.Option(None, help="cuda, cuda:N or cpu (default: CUDA when available; under "
                                                    "torchrun each rank's GPU)."),
    step_mode: str = typer.Option("auto", help="auto (the largest and smallest subnets from one CUDA graph on "
                                               "one GPU, eager otherwise), graph or eager; not part of the run's "
                                               "identity."),
    progress: bool = typer.Option(True, help="Show a progress bar with the ETA."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a weight-sharing supernet of a space (sandwich rule, in-place distillation); resumable.

    Several GPUs: torchrun --nproc-per-node N -m nas.cli supernet train ... (--batch-size is global).

    Exit status: 0 done; 75 paused (--time-budget, --max-steps, SIGTERM: run it again); 1 NaN loss.
    """
    from evaluators.supernet import PAUSED_EXIT_CODE, train_supernet

    # the options the user set, passed on as train_supernet's keywords (which it checks)
    recipe: dict[str, Any] = {k: v for k, v in dict(batch_size=batch_size, lr=lr, warmup=warmup,
                                                    weight_decay=weight_decay, sandwich_n=sandwich_n,
                                                    drop_path_rate=drop_path_rate, subset=subset,
                                                    seed=seed).items() if v is not None}
    options: dict[str, Any] = {k: v for k, v in dict(resolution=resolution, device=device,
                                                     time_budget=time_budget, max_steps=max_steps,
                                                     checkpoint_every=checkpoint_every,
                                                     val_subset=val_subset).items() if v is not None}
    with user_errors():
        r = train_supernet(space, data=data, out=out, epochs=epochs, progress=progress, step_mode=step_mode,
                           **options, **recipe)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one report, from rank 0
        if as_json:
            print_json(r.to_dict())
        else:
            _print_result(r)
    if r.status == "nan":
        raise typer.Exit(1)
    if r.status == "paused":
        raise typer.Exit(PAUSED_EXIT_CODE)


def _print_result(r: Any) -> None:
    line = (f"{r.status}: step {r.steps_done} of {r.total_steps} ({r.epochs_done:.3g} epochs) in {r.out}"
            + (f"; this call {r.session_steps} steps at {r.images_per_s:,.0f} img/s ({r.step_mode})"
               if r.session_steps else ""))
    console.print(line, highlight=False)
    if r.reason:
        console.print(f"  {r.reason}", highlight=False)
    for name, top1 in r.final_top1.items():
        console.print(f"  {name} subnet: top-1 {top1:.2f} % (inherited weights, BatchNorm recalibrated)",
                      highlight=False)


@app.command("eval")
def eval_cmd(
    folder: str = typer.Option(..., "--dir", metavar="DIR", help="Folder of `nas supernet train`."),
    config: List[str] = typer.Option(..., "--config", metavar="CONFIG.json|PRESET",
                                     help="Architecture(s) to evaluate; repeatable."),
    val_subset: Optional[int] = typer.Option(None, help="Validation images (default: all)."),
    calib_images: Optional[int] = typer.Option(None, help="Training images for the BatchNorm recalibration "
                                                          "(default: what the training run used)."),
    device: Optional[str] = typer.Option(None, help="cuda, cuda:N or cpu (default: CUDA when available)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Inherited-weight top-1 of architectures (BatchNorm recalibrated per architecture)."""
    from evaluators.supernet import InheritedAccuracy, load_supernet
    from search_spaces import resolve_config

    with user_errors():
        configs = [resolve_config(c) for c in config]
        sn = load_supernet(folder, device=device)
        acc = InheritedAccuracy.for_supernet(sn, val_subset=val_subset, calib_images=calib_images)
        rows = []
        for spec, cfg in zip(config, configs):
            top1, seconds = acc(cfg)
            rows.append(dict(config=spec, arch_id=cfg.arch_id, summary=cfg.summary(), top1=top1, seconds=seconds))
    if as_json:
        print_json(dict(supernet=str(sn.path), label=sn.label, results=rows))
        return
    console.print(f"{sn.label} from {sn.path}", highlight=False)
    for row in rows:
        console.print(f"  {row['top1']:6.2f} %  {row['seconds']:.2f} s  {row['config']}  ({row['summary']})",
                      highlight=False)

