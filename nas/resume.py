"""A resumed study keeps what its values mean: what a resume compares before any trial runs.

A study stores what its values mean when it is created (keys in ``nas.record``): its objectives, the
space (``STUDY_SPACE``), the accuracy estimator's identity (``STUDY_ESTIMATOR``) and the settings
(``STUDY_SETTINGS``: the task, the profiler protocol, the predictor). Resuming it with a setting that
changes one of them would put two kinds of number into one study (the same architecture scored
-0.263 and 0.251, both on one front), so ``resume_conflicts`` lists every such difference as the
setting, its stored value and this run's, and ``refuse_conflicts`` refuses them in one message that
says how to resume. Settings that do not change a value's meaning (trials, sampler, seed, workers,
storage, the data folder) may change freely.

============================ ===========================================================================
what                         compared when
============================ ===========================================================================
objectives                   always (another set of objectives is another study)
space                        always: the stored space (base, fixed values, knobs); studies made before it
                             was stored: the distributions their trials sampled (what Optuna cannot mix)
accuracy estimator           accuracy is an objective or constraint: its identity, explained as the
                             ``--proxy``/``--data``/``--train-*``... settings that changed it
task (``--data``)            no accuracy: the head's classes still set params, FLOPs and throughput
profiler protocol            a measured throughput/latency/memory: device, batch, dtype, profile mode,
                             ``--pad-channels``, ``--gelu-epilogue`` (a study made before one existed was
                             measured without it)
predictor                    a predicted objective or constraint
============================ ===========================================================================
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from evaluators.estimators import AccuracyEstimator
from search_spaces.space import Knob, SearchSpace

from . import record as R
from .estimators import build_estimator, identity_change
from .objectives import Constraint, Objective
from .settings import EstimatorOptions, SearchSettings

__all__ = ["Conflict", "space_meaning", "resume_conflicts", "objective_conflict", "refuse_conflicts"]

PROFILER_SETTINGS = {"device": "--device", "batch_size": "--batch-size", "dtype": "--dtype",
                     "profile_mode": "profile mode"}
# absent from a stored study: off (it did not exist then); None and False both read "off"
UNSET_MEANS_OFF = {"pad_channels": "--pad-channels", "gelu_epilogue": "--gelu-epilogue"}
_NOT_MEANING = ("data_dir",)  # where the files are, not what they hold
_SPACE_PARTS = ("base", "fixed", "knobs")  # a space's name, description and constraints do not change a value


@dataclass(frozen=True)
class Conflict:
    """One setting whose change would make this run's values incomparable with the study's."""

    setting: str  # a command-line option (``--proxy-resolution``) or what it is (``predictor``)
    stored: Any
    now: Any
    detail: str = ""  # what differs inside it (a space's knobs, an estimator's identity)
    off: bool = False  # an option whose None means "off" (``--pad-channels``): shown as off, resumed by dropping it
    #                    (a flag's True is shown as "on", resumed by giving the flag)

    @property
    def option(self) -> bool:
        return self.setting.startswith("--")

    def _show(self, value: Any) -> str:
        if self.off and value is None:
            return "off"
        if self.off and value is True:
            return "on"
        if self.option and isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value) if self.option and value is not None else repr(value)

    def __str__(self) -> str:
        if self.stored == self.now:  # the same name, another content (an edited space file)
            return f"{self.setting} {self._show(self.stored)} as it was then (it changed since: {self.detail})"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.setting} {self._show(self.stored)}, not {self._show(self.now)}{detail}"

    @property
    def resume_with(self) -> Optional[str]:
        """The option that resumes with the stored value (None: no option gives it back, e.g. an edited space file)."""
        if self.off and self.stored is None and self.now is not None:
            return f"drop {self.setting}"
        if self.off and self.stored is True:
            return self.setting
        if not self.option or self.stored is None or self.stored == self.now:
            return None
        return f"{self.setting} {self._show(self.stored)}"


def _on(value: Any) -> Any:
    """An ``UNSET_MEANS_OFF`` setting's value, None when off (absent, None or a flag's False)."""
    return None if value is None or value is False else value


def _plain(value: Any) -> Any:
    """As a study stores it (JSON: tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------------------------ space
def space_meaning(space: SearchSpace) -> dict[str, Any]:
    """What of a space decides which network a trial's parameters build: base, fixed values, knobs."""
    d = space.to_dict()
    return _plain({k: d[k] for k in _SPACE_PARTS})


def _show_part(value: Any) -> str:
    """A knob (``choices [8, 16]``, ``low 1 high 4``) or a value as a person reads it."""
    if isinstance(value, Mapping):
        return " ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _space_differences(stored: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    out = []
    for part in _SPACE_PARTS:
        a, b = stored.get(part) or {}, now.get(part) or {}
        for key in dict.fromkeys([*a, *b]):
            if a.get(key) != b.get(key):
                what = "knob" if part == "knobs" else part
                shown = [_show_part(d[key]) if key in d else "absent" for d in (a, b)]
                out.append(f"{what} {key}: {shown[0]} stored, {shown[1]} now")
    return out


def _distribution(knob: Knob) -> Any:
    """The Optuna distribution ``nas.trial.suggest_config`` samples ``knob`` from."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if knob.choices is not None:
        return CategoricalDistribution(list(knob.choices))
    if knob.kind == "int":
        return IntDistribution(int(knob.low), int(knob.high), step=int(knob.step or 1), log=knob.log)  # type: ignore[arg-type]
    return FloatDistribution(float(knob.low), float(knob.high), step=knob.step, log=knob.log)  # type: ignore[arg-type]


def _show_distribution(d: Any) -> str:
    if hasattr(d, "choices"):
        return f"choices {list(d.choices)}"
    return f"{d.low}..{d.high}" + (f" step {d.step}" if d.step is not None else "") + (" log" if d.log else "")


def _sampled_differences(study: Any, space: SearchSpace) -> list[str]:
    """Knobs whose distribution differs from the one the study's trials sampled (studies without a stored space)."""
    sampled: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        for name, d in t.distributions.items():
            sampled.setdefault(name, d)
    out = []
    for knob in space.knobs:
        d = _distribution(knob)
        if knob.name in sampled and sampled[knob.name] != d:
            out.append(f"knob {knob.name}: {_show_distribution(sampled[knob.name])} stored, "
                       f"{_show_distribution(d)} now")
    return out


def _space_conflicts(study: Any, stored_settings: Mapping[str, Any], settings: SearchSettings,
                     space: SearchSpace) -> list[Conflict]:
    stored = study.user_attrs.get(R.STUDY_SPACE)
    differences = (_space_differences(stored, space_meaning(space)) if stored is not None
                   else _sampled_differences(study, space))
    if not differences:
        return []
    name = settings.space if isinstance(settings.space, str) else space.name
    shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
    return [Conflict("--space", stored_settings.get("space", "?"), name, shown)]


# ------------------------------------------------------------------------------------------ accuracy estimator
def _options(stored_settings: Mapping[str, Any]) -> Optional[EstimatorOptions]:
    try:
        return EstimatorOptions.from_mapping(stored_settings) if stored_settings.get("proxy") else None
    except (ValueError, TypeError):
        return None


def _identity(options: EstimatorOptions) -> Optional[dict[str, Any]]:
    """The identity the options build now (None: they build none any more, e.g. a supernet folder gone)."""
    try:
        return _plain(build_estimator(options).identity)
    except (ValueError, TypeError, OSError):
        return None


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _estimator_conflicts(study: Any, stored_settings: Mapping[str, Any], settings: SearchSettings,
                         estimator: AccuracyEstimator) -> list[Conflict]:
    """The settings whose change changes the accuracy estimator's identity (each named with both values)."""
    now = _plain(estimator.identity)
    stored_opts = _options(stored_settings)
    stored = study.user_attrs.get(R.STUDY_ESTIMATOR)
    if stored is None and stored_opts is not None:  # a study made before identities were stored
        stored = _identity(stored_opts)
    if stored is None:
        proxy = study.user_attrs.get(R.STUDY_PROXY)
        return [Conflict("--proxy", proxy, settings.proxy)] if proxy not in (None, settings.proxy) else []
    if _plain(stored) == now:
        return []
    changed: list[str] = []
    if stored_opts is not None:
        changed = [f.name for f in dataclasses.fields(EstimatorOptions)
                   if f.name not in _NOT_MEANING and getattr(stored_opts, f.name) != getattr(settings, f.name)]
        if _identity(stored_opts) == stored:  # the stored settings still build the stored estimator: name the ones
            alone = [f for f in changed if _identity(dataclasses.replace(stored_opts, **{f: getattr(settings, f)}))
                     != stored]  # that change it on their own
            changed = alone or changed
        else:  # the code that measures accuracy changed since the study was made: say that too
            changed = []
    out = [Conflict(_option_name(f), getattr(stored_opts, f), getattr(settings, f)) for f in changed]
    return out or [Conflict("accuracy estimator", stored.get("kind"), now.get("kind"), identity_change(stored, now)
                            or "")]


# ------------------------------------------------------------------------------------------ all of it
def objective_conflict(study: Any, names: Sequence[str]) -> Optional[str]:
    """Another set of objectives is another study: the message, or None."""
    have = study.user_attrs.get(R.STUDY_OBJECTIVES) or study.metric_names
    if have is not None and list(have) != list(names):
        return (f"study {study.study_name!r} exists with objectives {list(have)}, not {list(names)}; use another "
                f"--study name")
    return None


def _setting_conflicts(stored: Mapping[str, Any], settings: SearchSettings,
                       names: Mapping[str, str]) -> list[Conflict]:
    return [Conflict(option, stored[field], getattr(settings, field)) for field, option in names.items()
            if field in stored and stored[field] != getattr(settings, field)]


def resume_conflicts(study: Any, settings: SearchSettings, objectives: Sequence[Objective],
                     constraints: Sequence[Constraint] = (), *, estimator: Optional[AccuracyEstimator] = None,
                     space: Optional[SearchSpace] = None) -> list[Conflict]:
    """Every setting of this run (``settings``, resolved) that changes what the values of ``study`` mean.

    ``estimator``: the accuracy's (None: accuracy is not measured); ``space``: the loaded space
    (None: not compared, as in a worker process whose paths are absolute).
    """
    stored = dict(study.user_attrs.get(R.STUDY_SETTINGS) or {})
    needs = {o.needs for o in objectives} | {c.objective.needs for c in constraints}
    out: list[Conflict] = []
    if space is not None:
        out += _space_conflicts(study, stored, settings, space)
    if estimator is not None:
        out += _estimator_conflicts(study, stored, settings, estimator)
    else:  # the task still sets the head's classes: params, FLOPs, throughput
        out += _setting_conflicts(stored, settings, {"data": "--data"})
    if "profile" in needs:
        out += _setting_conflicts(stored, settings, PROFILER_SETTINGS)
        out += [Conflict(option, _on(stored.get(field)), _on(getattr(settings, field)), off=True)
                for field, option in UNSET_MEANS_OFF.items() if _on(stored.get(field)) != _on(getattr(settings, field))]
    if "predict" in needs and stored.get("predictor") != settings.predictor:
        out.append(Conflict("predictor", stored.get("predictor"), settings.predictor))
    return out


def refuse_conflicts(study: Any, conflicts: Sequence[Conflict]) -> None:
    """Raise ValueError naming every conflict with its stored and new value, and how to resume."""
    if not conflicts:
        return
    hint = " ".join(c.resume_with for c in conflicts if c.resume_with)
    raise ValueError(f"study {study.study_name!r} was run with {'; '.join(map(str, conflicts))}: this run's values "
                     f"would not compare with the ones it holds. Resume with the stored settings"
                     + (f" ({hint})" if hint else "") + " or use another --study name")
