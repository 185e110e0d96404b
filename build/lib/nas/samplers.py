"""Optuna samplers by name (``--sampler``). Add one: a factory function plus ``@register_sampler``."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["SAMPLERS", "register_sampler", "make_sampler"]

SamplerFactory = Callable[..., Any]
SAMPLERS: dict[str, SamplerFactory] = {}


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    def deco(fn: SamplerFactory) -> SamplerFactory:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is already registered")
        SAMPLERS[name] = fn
        return fn

    return deco


@register_sampler("nsga2")
def _nsga2(*, seed: int, n_trials: int, **_: Any) -> Any:
    import optuna

    # a population of ~1/5 of the budget gives several generations on small budgets
    population = max(8, min(50, n_trials // 5))
    return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)


@register_sampler("nsga3")
def _nsga3(*, seed: int, n_trials: int, **_: Any) -> Any:
    import optuna

    population = max(8, min(50, n_trials // 5))
    return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)


@register_sampler("tpe")
def _tpe(*, seed: int, n_trials: int, **_: Any) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=max(5, min(20, n_trials // 5)))


@register_sampler("gp")
def _gp(*, seed: int, n_trials: int, **_: Any) -> Any:
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(5, min(20, n_trials // 5)),
                                     warn_independent_sampling=False)


@register_sampler("random")
def _random(*, seed: int, **_: Any) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(name: str, *, seed: int, n_trials: int) -> Any:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](seed=seed, n_trials=n_trials)
