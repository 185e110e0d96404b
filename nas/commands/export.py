"""``nas export``: write a chosen trial (or any config) as a model folder: config, weights, ONNX, card."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._common import console, fail, print_json, user_errors


def export(
    out: str = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder to write (must be new or empty)."),
    study: Optional[str] = typer.Option(None, help="Study to export from (with --trial or --pick)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    trial: Optional[int] = typer.Option(None, "--trial", "-t", help="Trial number (see `nas pareto`)."),
    pick: List[str] = typer.Option(
        [], "--pick", "-p",
        help="knee | max-<objective> | min-<objective> | a condition like 'throughput>=8000'. Repeatable: "
             "conditions keep Pareto trials, then one knee/max-/min- picks among them."),
    config: Optional[str] = typer.Option(None, "--config", metavar="CONFIG.json|PRESET",
                                         help="Export a config instead of a study trial."),
    weights: Optional[str] = typer.Option(None, help="Weights to load: a safetensors file or checkpoint, or "
                                          "supernet:DIR (extracted from a trained supernet); default: the trial's "
                                          "trained weights, or its supernet's, else a seeded initialisation."),
    finetune: Optional[float] = typer.Option(None, "--finetune", metavar="EPOCHS",
                                             help="Fine-tune the weights (or a fresh network) on --data first."),
    data: Optional[str] = typer.Option(None, help="--finetune: the dataset to fine-tune on."),
    head_only: bool = typer.Option(False, "--head-only", help="--finetune: train the classifier alone."),
    finetune_lr: float = typer.Option(1e-4, help="--finetune: peak AdamW LR at batch 256 (sqrt-scaled)."),
    finetune_batch_size: int = typer.Option(128, help="--finetune: batch size."),
    device: Optional[str] = typer.Option(None, help="--finetune: cuda | cpu (default: CUDA when available)."),
    formats: str = typer.Option("safetensors,onnx", "--format", "-f",
                                help="Comma list of safetensors, onnx, pt, torchscript (safetensors always)."),
    force: bool = typer.Option(False, "--force",
                               help="Replace a non-empty --out folder (once the new one is complete)."),
    opset: int = typer.Option(17, help="ONNX opset (>= 17)."),
    seed: int = typer.Option(0, help="Seed of the initialisation (untrained exports) and of the check inputs."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a Pareto point as a model people can load: search_spaces.load_model, timm, onnxruntime."""
    if study is None and config is None:
        fail("give --study NAME (with --trial N or --pick ...) or --config CONFIG.json|PRESET")
    if study is not None and config is not None:
        fail("give --study or --config, not both")
    if study is not None and (trial is None) == (not pick):
        fail("with --study give exactly one of --trial N or --pick (knee | max-<objective> | min-<objective> | "
             "'throughput>=8000')" + (", not both" if trial is not None else ""))
    if config is not None and (trial is not None or pick):
        fail("--trial/--pick choose a trial of a --study; with --config there is nothing to pick")
    if finetune is None and (data is not None or head_only):
        fail("--data and --head-only say what --finetune EPOCHS trains on: give --finetune too")

    from nas.export import Finetune, export_model, parse_formats

    with user_errors():
        parse_formats(formats)  # unknown formats fail before any study is opened
        spec = None if finetune is None else Finetune(finetune, data or "", head_only=head_only, lr=finetune_lr,
                                                       batch_size=finetune_batch_size, device=device)
        result = export_model(out, config=config, study=study, storage=storage, trial=trial, pick=pick or None,
                              formats=formats, force=force, opset=opset, weights=weights, seed=seed, finetune=spec)
    if as_json:
        print_json(result.to_dict())
        return
    meta = result.metadata
    src = meta["source"]
    what = f"trial #{src['trial']} of study {src['study']}" if src["kind"] == "study" else f"config {src['config']}"
    console.print(f"exported {what} to [bold]{result.out}[/] ({result.weights} weights)", highlight=False)
    console.print(f"  {meta['summary']}  params {meta['params'] / 1e6:.3f} M, {meta['flops'] / 1e9:.3f} GMACs",
                  highlight=False)
    for name, fname in result.files.items():
        checks = [r for r in meta["verification"] if r["format"] == name]
        worst = max((r["max_abs_diff"] for r in checks), default=0.0)
        console.print(f"  {fname:<22} checked ({', '.join(sorted({r['loader'] for r in checks}))}): "
                      f"max abs diff {worst:.2g}", highlight=False)
    console.print("  config.json, export.json, README.md", highlight=False)
