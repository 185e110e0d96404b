"""``nas finetune``: train a chosen point on your data from an initialisation and write it as a model folder."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._common import console, fail, print_json, user_errors


def finetune(
    out: str = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder to write (must be new or empty)."),
    init: str = typer.Option(..., help="supernet:DIR (the point's weights from a trained supernet) | a checkpoint "
                             "file (safetensors, or an official FasterViT .pth.tar) | scratch."),
    data: str = typer.Option(..., help="Dataset to fine-tune on (fashion-mnist, cifar10, imagefolder:PATH, ...)."),
    epochs: float = typer.Option(..., help="Fine-tuning budget in epochs."),
    config: Optional[str] = typer.Option(None, "--config", metavar="CONFIG.json|PRESET", help="The point to train."),
    study: Optional[str] = typer.Option(None, help="Or a study's point (with --trial or --pick)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    trial: Optional[int] = typer.Option(None, "--trial", "-t", help="Trial number (see `nas pareto`)."),
    pick: List[str] = typer.Option([], "--pick", "-p", help="As in `nas export` (knee, max-accuracy, ...)."),
    head_only: bool = typer.Option(False, "--head-only", help="Train the classifier alone (backbone frozen)."),
    lr: float = typer.Option(1e-4, help="Peak AdamW LR at batch 256 (sqrt-scaled to the batch)."),
    batch_size: int = typer.Option(128, help="Batch size."),
    resolution: Optional[int] = typer.Option(None, help="Training resolution (default: the config's)."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: CUDA when available)."),
    formats: str = typer.Option("safetensors,onnx", "--format", "-f", help="As in `nas export`."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder once the new one is done."),
    seed: int = typer.Option(0, help="Seed of the run (and of a scratch initialisation)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune a point (from a supernet, a checkpoint or scratch) and export it with its card and top-1."""
    if (study is None) == (config is None):
        fail("give --config CONFIG.json|PRESET, or --study NAME with --trial N or --pick ...")
    from nas.export import Finetune, export_model

    with user_errors():
        spec = Finetune(epochs, data, head_only=head_only, lr=lr, batch_size=batch_size, resolution=resolution,
                        device=device)
        result = export_model(out, config=config, study=study, storage=storage, trial=trial, pick=pick or None,
                              formats=formats, force=force, weights=None if init == "scratch" else init, seed=seed,
                              finetune=spec)
    if as_json:
        print_json(result.to_dict())
        return
    w = result.metadata["weights"]
    console.print(f"fine-tuned {result.config.summary()} from {w['init']} on {w['data']}: validation top-1 "
                  f"{w['val_top1']:.2f} % (before: {w['init_top1']:.2f} %), {w['steps']} steps in {w['seconds']:g} s; "
                  f"wrote [bold]{result.out}[/]", highlight=False)
