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
    return TrainingEstimator(recipe, data=o.data, data_dir=o.data_dir,
                             halving=Halving(o.eta, o.min_budget) if o.fidelity == "sh" else None)


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
