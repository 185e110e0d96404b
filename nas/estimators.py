"""The accuracy estimator of a search, by name: ``--proxy NAME`` -> one ``evaluators.estimators.AccuracyEstimator``.

``--proxy`` takes a registered estimator (``train``, ``supernet:DIR``: the name, a colon and its
argument) or the name of a zero-cost proxy (``nas proxies`` lists them). ``build_estimator``
turns a search's ``EstimatorOptions`` into the estimator, checked once; everything that depends on
what the accuracy number is (the evaluator, the architecture cache, labels, ``nas confirm``, the
Ray ASHA choice) asks that object. Add a kind with ``@register_estimator(NAME, EstimatorClass)``
on a function ``(argument, options) -> estimator``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from evaluators.estimators import AccuracyEstimator, Halving, SupernetEstimator, TrainingEstimator, ZeroCostEstimator
from evaluators.train import TrainRecipe

from .settings import EstimatorOptions

__all__ = ["ESTIMATORS", "register_estimator", "estimator_type", "build_estimator", "estimator_label",
           "identity_change", "canonical_proxy"]

EstimatorFactory = Callable[[str, EstimatorOptions], AccuracyEstimator]


@dataclass(frozen=True)
class _Registered:
    cls: type[AccuracyEstimator]
    factory: EstimatorFactory


ESTIMATORS: dict[str, _Registered] = {}


def register_estimator(name: str, cls: type[AccuracyEstimator]) -> Callable[[EstimatorFactory], EstimatorFactory]:
    """Register ``factory(argument, options) -> cls instance`` as ``--proxy NAME[:ARGUMENT]``."""
    def deco(factory: EstimatorFactory) -> EstimatorFactory:
        if name in ESTIMATORS:
            raise ValueError(f"estimator {name!r} is already registered")
        ESTIMATORS[name] = _Registered(cls, factory)
        return factory

    return deco


def _split(proxy: str) -> tuple[str, str]:
    kind, _, argument = proxy.partition(":")
    return kind, argument


def estimator_type(proxy: str) -> type[AccuracyEstimator]:
    """The estimator class ``--proxy`` names (its capabilities, before anything is built)."""
    kind, _ = _split(proxy)
    return ESTIMATORS[kind].cls if kind in ESTIMATORS else ZeroCostEstimator


@register_estimator("train", TrainingEstimator)
def _training(argument: str, o: EstimatorOptions) -> TrainingEstimator:
    if argument:
        raise ValueError(f"--proxy {o.proxy!r}: the train estimator takes no argument (--proxy train)")
    recipe = TrainRecipe(epochs=o.train_epochs, batch_size=o.train_batch_size, resolution=o.proxy_resolution,
                         subset=o.train_subset, val_subset=o.train_val_subset)
    if o.train_recipe is not None:
        recipe = with_train_recipe(recipe, o.train_recipe)
    return TrainingEstimator(recipe, data=o.data, data_dir=o.data_dir,
                             halving=Halving(o.eta, o.min_budget) if o.fidelity == "sh" else None)


#: ``--train-recipe`` keys that other options set: a recipe may name them only with the same value
_OPTION_OF = {"batch_size": "--train-batch-size", "resolution": "--proxy-resolution", "epochs": "--train-epochs",
              "subset": "--train-subset", "val_subset": "--train-val-subset"}
#: ``TrainRecipe`` keys a ``--train-recipe`` may not hold (the budget in steps; evaluation cadence)
_NOT_IN_RECIPE = ("steps", "eval_every", "eval_batch_size")


def read_train_recipe(text: str) -> dict[str, Any]:
    """The ``TrainRecipe`` fields of ``--train-recipe``: a JSON object, or a JSON file holding one; a file
    whose top level has a ``recipe`` object (``results/benchmarks/groundtruth2-summary.json``) gives that."""
    from search_spaces.files import loads_json, read_text

    stripped = text.strip()
    source = "--train-recipe"
    if not stripped.startswith(("{", "[")):
        source = f"--train-recipe {text}"
        stripped = read_text(text, "a JSON file with a training recipe")
    try:
        data = loads_json(stripped)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("recipe"), dict):
        data = _recorded_recipe(data, source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object of TrainRecipe fields (lr, warmup, grad_clip, augment, "
                         f"...)")
    return data


def _recorded_recipe(summary: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``recipe`` a results summary recorded, as a ``--train-recipe``: its evaluation cadence
    dropped, and its budget in ``steps`` given back as the summary's ``epochs`` (so ``--train-epochs``
    must agree with it, as any option a recipe also sets)."""
    recipe = {k: v for k, v in summary["recipe"].items() if k not in ("eval_every", "eval_batch_size")}
    if "steps" in recipe:
        epochs = summary.get("epochs")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)):
            raise ValueError(f"{source}: its recipe records a budget of {recipe['steps']} steps but the file has no "
                             f"'epochs' to say what that is on other data; drop 'steps' from the recipe")
        del recipe["steps"]
        recipe["epochs"] = float(epochs)
    return recipe


def with_train_recipe(recipe: TrainRecipe, text: str, option_of: Mapping[str, str] = _OPTION_OF) -> TrainRecipe:
    """``recipe`` (built from the ``--train-*`` options) with the fields of ``--train-recipe``.

    A field that an option also sets must agree with it (else one error naming both: nothing is
    silently overridden; ``option_of`` names those options, field -> option, for another command
    line); the budget in steps and the evaluation cadence are not a recipe's to set."""
    fields = read_train_recipe(text)
    base = recipe.to_dict()
    clashes = [f"{k} {v!r} (the option {option_of[k]} is {base[k]!r})" for k, v in fields.items()
               if k in option_of and v != base[k]]
    if clashes:
        raise ValueError(f"--train-recipe sets {'; '.join(clashes)}: pass the options with the recipe's values, or "
                         f"drop those keys from it")
    refused = sorted(set(fields) & set(_NOT_IN_RECIPE))
    if refused:
        raise ValueError(f"--train-recipe may not set {', '.join(refused)} (the budget is --train-epochs; evaluation "
                         f"follows it)")
    try:
        return TrainRecipe.from_dict(dict(base, **fields))
    except (TypeError, ValueError) as e:
        raise ValueError(f"--train-recipe: {e}") from None


@register_estimator("supernet", SupernetEstimator)
def _supernet(argument: str, o: EstimatorOptions) -> SupernetEstimator:
    if not argument:
        raise ValueError("--proxy supernet:DIR needs the folder of a trained supernet (`nas supernet train --out DIR`)")
    # the supernet's own data unless --data names another dataset (with the same classes)
    data = o.data if o.data != EstimatorOptions.data else None
    return SupernetEstimator(argument, data=data, data_dir=o.data_dir, val_subset=o.train_val_subset)


def canonical_proxy(proxy: str) -> str:
    """``proxy`` as every process reads it alike: a ``supernet:DIR`` folder made absolute (workers and Ray
    trials may run in another folder); other names unchanged."""
    kind, argument = _split(proxy)
    if kind == "supernet" and argument:
        return f"supernet:{Path(argument).expanduser().resolve()}"
    return proxy


def _zero_cost(o: EstimatorOptions) -> ZeroCostEstimator:
    for name in ("proxy_resolution", "proxy_batch_size"):
        if getattr(o, name) is None:
            raise ValueError(f"{name} is chosen for the device: resolve the settings first (SearchSettings.resolved)")
    assert o.proxy_resolution is not None and o.proxy_batch_size is not None
    return ZeroCostEstimator(o.proxy, data=o.data, data_dir=o.data_dir, resolution=o.proxy_resolution,
                             batch_size=o.proxy_batch_size)


def build_estimator(options: EstimatorOptions) -> AccuracyEstimator:
    """The estimator ``options.proxy`` names, built from ``options`` and checked (ValueError naming what is wrong)."""
    kind, argument = _split(options.proxy)
    est = ESTIMATORS[kind].factory(argument, options) if kind in ESTIMATORS else _zero_cost(options)
    if options.fidelity == "sh" and not est.supports_rungs:
        names = " or ".join(n for n, r in ESTIMATORS.items() if r.cls.supports_rungs)
        raise ValueError(f"--fidelity sh needs --proxy {names}: {est.describe()} has no training budget to halve "
                         f"(use --fidelity full)")
    return est


def estimator_label(settings: Mapping[str, Any]) -> str:
    """The accuracy label of a study's stored (flat) settings, for studies made before labels were stored.

    Device-dependent values (resolution, batch) never enter a label, so missing ones are filled as
    on the CPU; settings no estimator can be built from any more (a proxy since removed) read
    ``NAME score``.
    """
    proxy = settings.get("proxy")
    if not proxy:
        return "accuracy proxy score"
    try:
        options = EstimatorOptions.from_mapping(settings)
        filled = {n: v[1] for n, v in EstimatorOptions.DEVICE_DEFAULTS.items() if getattr(options, n) is None}
        return build_estimator(dataclasses.replace(options, **filled)).label
    except (ValueError, TypeError):
        return f"{proxy} score"


def identity_change(stored: Optional[Mapping[str, Any]], current: Mapping[str, Any]) -> Optional[str]:
    """What differs between a study's stored estimator identity and this run's (None: the same, or none stored)."""
    if not stored:
        return None
    keys = [k for k in dict.fromkeys([*stored, *current]) if stored.get(k) != current.get(k)]
    if not keys:
        return None
    return "; ".join(f"{k}: {stored.get(k)!r} stored, {current.get(k)!r} now" for k in keys)
