"""Optuna samplers by name (``--sampler``). Add one: a factory function plus ``@register_sampler``."""

from __future__ import annotations

from typing import Any, Callable, Optional

from evaluators.checks import check_int

__all__ = ["SAMPLERS", "POPULATION_SAMPLERS", "register_sampler", "make_sampler", "sampler_for", "check_population",
           "default_population"]

SamplerFactory = Callable[..., Any]
SAMPLERS: dict[str, SamplerFactory] = {}


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    def deco(fn: SamplerFactory) -> SamplerFactory:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is already registered")
        SAMPLERS[name] = fn
        return fn

    return deco


#: samplers that take a population size (``--population``)
POPULATION_SAMPLERS = ("nsga2", "nsga3")


def default_population(n_trials: int) -> int:
    """~1/5 of the trial budget (8..50): several generations on small budgets.

    A study bounded by ``--timeout`` alone has no trial budget (``n_trials`` is then 100, so 20):
    pass ``--population`` sized to the trials the time allows, or NSGA-II never leaves its random
    first generation.
    """
    return max(8, min(50, n_trials // 5))


@register_sampler("nsga2")
def _nsga2(*, seed: int, n_trials: int, population: Optional[int] = None, **_: Any) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=population or default_population(n_trials), seed=seed)


@register_sampler("nsga3")
def _nsga3(*, seed: int, n_trials: int, population: Optional[int] = None, **_: Any) -> Any:
    import optuna

    return optuna.samplers.NSGAIIISampler(population_size=population or default_population(n_trials), seed=seed)


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


def check_population(name: str, population: Optional[int]) -> None:
    """``--population`` is an integer >= 2 and only for the samplers that have one."""
    if population is None:
        return
    if name not in POPULATION_SAMPLERS:
        raise ValueError(f"--population {population} applies to {' and '.join(POPULATION_SAMPLERS)}, "
                         f"not to --sampler {name}")
    check_int("--population", population, minimum=2)


def sampler_for(settings: Any, *, seed: Optional[int] = None, n_trials: Optional[int] = None) -> Any:
    """The sampler a study's settings name (``sampler``, ``population``); ``n_trials`` defaults to the
    settings' trials, else 100 (a study bounded by its timeout), ``seed`` to the settings' seed."""
    return make_sampler(settings.sampler, seed=settings.seed if seed is None else seed,
                        n_trials=int(n_trials or settings.trials or 100), population=settings.population)


def make_sampler(name: str, *, seed: int, n_trials: int, population: Optional[int] = None) -> Any:
    """The sampler ``name``; ``n_trials`` sizes what depends on the budget, ``population`` overrides it."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    check_population(name, population)
    extra = {} if population is None else dict(population=population)
    return SAMPLERS[name](seed=seed, n_trials=n_trials, **extra)
