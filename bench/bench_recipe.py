"""``--train-recipe JSON|FILE`` for the benchmarks that train a supernet beside stand-alone runs.

``bench/oneshot.py`` and ``bench/supernet.py`` both compare a supernet with stand-alone training
and must train both with one recipe (ground truth 2's: ``results/benchmarks/groundtruth2-summary.json``).
The rules, shared here so the two cannot drift apart:

- the recipe is read by ``nas.estimators.read_train_recipe`` (a JSON object, or a file holding one or
  a top-level ``recipe``);
- how a run goes, not what it trains, is dropped: the step mode (``compile``: each run picks its own)
  and the evaluation cadence (``eval_every``, ``eval_batch_size``);
- the budget: a summary file's recorded ``steps`` come back as its ``epochs`` (``read_train_recipe``),
  which ``--epochs`` must equal like any option the recipe also sets; an inline recipe's ``steps``
  must be the budget of ``--epochs`` on the benchmark's data (``check_steps``), else the supernet
  would not be trained at the ground truth's budget;
- a field the supernet's training cannot follow (``ema_decay``, ``amp``...) is refused;
- a field a benchmark option also sets (batch, resolution, epochs, subsets) must agree with it
  (``check_recipe``: one error naming both).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

#: ``--train-recipe`` keys the supernet follows (as ``SupernetRecipe`` fields) besides ``augment``
SUPERNET_FOLLOWS = ("lr", "lr_scaling", "weight_decay", "warmup", "label_smoothing", "grad_clip", "drop_path_rate")
#: keys the benchmarks' own options set, and those options (checked by ``nas.estimators.with_train_recipe``)
SET_BY_OPTIONS = {"batch_size": "--batch-size", "resolution": "--resolution", "epochs": "--epochs",
                  "subset": "--subset", "val_subset": "--val-subset"}
#: keys that change how a run goes (speed, logging), not what it trains: dropped
RUN_ONLY = ("compile", "eval_every", "eval_batch_size")


def _bad(msg: str) -> SystemExit:
    return SystemExit(f"error: {msg}")


def _read(text: str) -> dict[str, Any]:
    from nas.estimators import read_train_recipe

    try:
        return read_train_recipe(text)
    except (ValueError, FileNotFoundError) as e:
        raise _bad(str(e)) from None


def bench_recipe(text: Optional[str]) -> Optional[dict[str, Any]]:
    """``--train-recipe`` as the fields the supernet and the stand-alone runs train with (``RUN_ONLY`` and
    ``steps`` dropped; see ``recipe_steps``); a field the supernet cannot follow is refused."""
    if text is None:
        return None
    fields = _read(text)
    for k in RUN_ONLY + ("steps",):
        fields.pop(k, None)
    known = set(SUPERNET_FOLLOWS) | set(SET_BY_OPTIONS) | {"augment"}
    extra = sorted(k for k, v in fields.items() if k not in known and v is not None)
    if extra:
        raise _bad(f"--train-recipe sets {', '.join(extra)}, which the supernet's training cannot follow (it takes "
                   f"{', '.join(sorted(known))}): the supernet and the stand-alone runs would train differently")
    return fields


def recipe_steps(text: Optional[str]) -> Optional[int]:
    """The budget in steps a ``--train-recipe`` records (a summary file's), or None."""
    if text is None:
        return None
    steps = _read(text).get("steps")
    return None if steps is None else int(steps)


def check_steps(steps: Optional[int], *, epochs: float, batch_size: int, train_images: int) -> None:
    """Refuse a recipe whose recorded ``steps`` is not ``epochs`` at ``batch_size`` on ``train_images`` images
    (last partial batch dropped, as the trainers do)."""
    if steps is None:
        return
    want = max(1, round(epochs * (train_images // batch_size)))
    if steps != want:
        raise _bad(f"--train-recipe records steps {steps}, but --epochs {epochs:g} is {want} steps at batch "
                   f"{batch_size} on {train_images} training images: pass the --epochs the recipe was trained with "
                   f"({steps / max(1, train_images // batch_size):g}) or another recipe")


def check_budget(text: Optional[str], *, data: str, data_dir: Optional[str], epochs: float, batch_size: int,
                 subset: Optional[int]) -> None:
    """``check_steps`` of ``--train-recipe``'s recorded steps on the benchmark's data (loaded only when the recipe
    records steps)."""
    steps = recipe_steps(text)
    if steps is None:
        return
    from evaluators.data import load_dataset

    n = len(load_dataset(data, data_dir=data_dir).train)
    check_steps(steps, epochs=epochs, batch_size=batch_size, train_images=n if subset is None else min(subset, n))


def check_recipe(settings: Mapping[str, Any]) -> None:
    """Refuse, before anything trains, a recipe (``settings["train_recipe"]``) that the benchmark's own options
    contradict (``settings``' epochs, batch_size, resolution, subset, val_subset), naming both."""
    if not settings.get("train_recipe"):
        return
    from evaluators.train import TrainRecipe
    from nas.estimators import with_train_recipe

    base = TrainRecipe(epochs=float(settings["epochs"]), batch_size=int(settings["batch_size"]),
                       resolution=settings["resolution"], subset=settings["subset"], val_subset=settings["val_subset"])
    try:
        with_train_recipe(base, json.dumps(settings["train_recipe"]), option_of=SET_BY_OPTIONS)
    except ValueError as e:
        raise _bad(str(e)) from None


def supernet_recipe(recipe: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """``train_supernet`` keywords of the benchmark's recipe (``augment`` as ``augment_crop``/``augment_flip``)."""
    if not recipe:
        return {}
    out = {k: recipe[k] for k in SUPERNET_FOLLOWS if k in recipe}
    augment = recipe.get("augment") or {}
    out.update(augment_crop=float(augment.get("crop", 0.0)), augment_flip=bool(augment.get("flip", False)))
    return out
