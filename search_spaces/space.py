"""Search spaces as data: which ``FasterViTConfig`` knobs vary, over what, and when.

A space is a YAML file (or the same as a dict / ``SearchSpace`` object)::

    name: default
    base: faster_vit_0_224          # preset (or inline config dict) giving every unset value
    fixed:                          # values set for every point
      num_heads: [2, 4, 8, 16]
    knobs:                          # evaluated in file order
      dim: {choices: [48, 64, 96]}
      depths[2]: {low: 2, high: 12, step: 2}          # int range (inclusive)
      mlp_ratio: {low: 2.0, high: 4.0}                # float range (log: true for log scale)
      hat[2]: {choices: [true, false], when: {window_size[2]: 7}}
      ct_size: {choices: [1, 2, 3], when: {hat[2]: true}}   # conditional knob
    constraints: ["params <= 60e6"]  # optional, applied by the search to measured values

Knob names are config fields, with ``[i]`` selecting one stage of a per-stage field. A
conditional knob (``when``) is sampled only when every named knob/field has the given value (or,
written ``{in: [...]}``, one of the listed values); otherwise the base value stays. A field may be
set by several knobs told apart by a tag, ``field@tag``, when their conditions exclude each other,
e.g. resolution-dependent window choices::

      window_size[2]@384: {choices: [6, 8, 12, 24], when: {resolution: 384}}
      window_size[2]@512: {choices: [8, 16, 32], when: {resolution: 512}}
      hat[2]: {choices: [true, false], when: {"window_size[2]": {in: [6, 8, 12, 16]}}}

This module does no sampling through Optuna (that lives in ``nas``); ``sample_random`` exists for
ground-truth sets and tests.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from .config import FasterViTConfig
from .files import read_text, repeated_key
from .presets import resolve_config

__all__ = ["Knob", "OneOf", "SearchSpace", "load_space", "list_builtin_spaces", "SpaceError"]

_NAME = re.compile(r"^([a-z_0-9]+)(?:\[(\d+)\])?(?:@([A-Za-z0-9_]+))?$")


def _parts(name: str) -> re.Match[str]:
    """``field``, ``[index]`` and ``@tag`` of a knob or config path (its syntax is checked when a space is read)."""
    m = _NAME.match(name)
    if m is None:
        raise SpaceError(f"{name!r} is not a knob name: FIELD, FIELD[i] or FIELD@tag")
    return m
_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(FasterViTConfig) if f.init}
_PER_STAGE = {"depths", "num_heads", "window_size", "hat"}


@dataclass(frozen=True)
class OneOf:
    """A ``when`` condition ``{in: [...]}``: the knob/field has one of these values."""

    values: tuple

    def to_yaml(self) -> dict[str, list]:
        return {"in": list(self.values)}

    def __str__(self) -> str:
        return f"any of {list(self.values)}"


def _matches(value: Any, cond: Any) -> bool:
    return value in cond.values if isinstance(cond, OneOf) else value == cond


class SpaceError(ValueError):
    """A malformed search-space file or object; the message names the key (and line)."""


def _where(lines: Mapping[str, int], key: str) -> str:
    line = lines.get(key)
    return f" (line {line})" if line else ""


@dataclass(frozen=True)
class Knob:
    """One dimension of the space."""

    name: str
    choices: Optional[tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    when: tuple[tuple[str, Any], ...] = ()

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        ints = isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.low, bool)
        return "int" if ints else "float"

    @property
    def field(self) -> str:
        return _parts(self.name).group(1)

    @property
    def target(self) -> str:
        """The config path the knob sets (its name without an ``@tag``)."""
        return self.name.split("@", 1)[0]

    @property
    def index(self) -> Optional[int]:
        i = _parts(self.name).group(2)
        return int(i) if i is not None else None

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range knob (one without choices has both: checked when the space is read)."""
        if self.low is None or self.high is None:
            raise SpaceError(f"knob {self.name} has no range (low, high)")
        return self.low, self.high

    def size(self) -> float:
        """Number of distinct values (inf for a continuous range)."""
        if self.choices is not None:
            return len(self.choices)
        low, high = self.bounds()
        if self.kind == "int":
            return (high - low) // int(self.step or 1) + 1
        if self.step:
            return math.floor((high - low) / self.step + 1e-9) + 1
        return math.inf

    def values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        low, high = self.bounds()
        if self.kind == "int":
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.step:
            return [low + i * self.step for i in range(int(self.size()))]
        raise ValueError(f"knob {self.name} is continuous")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high)
            if self.step is not None:
                d["step"] = self.step
            if self.log:
                d["log"] = True
        if self.when:
            d["when"] = {c: v.to_yaml() if isinstance(v, OneOf) else v for c, v in self.when}
        return d


def _check_value(field_name: str, index: Optional[int], value: Any, where: str) -> None:
    """Type-check a value against the config field it sets (full validation happens in the config)."""
    if field_name in ("hat", "do_propagation", "layer_norm_last", "qkv_bias", "attn_bias", "pos_bias_1d",
                      "ct_attention", "ct_init", "ct_gate"):
        ok = isinstance(value, bool)
    elif field_name in ("attention", "stem"):
        ok = isinstance(value, str)
    elif field_name in ("layer_scale", "layer_scale_conv"):
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    elif field_name in ("mlp_ratio", "drop_path_rate"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif field_name == "resolution":
        ok = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, (list, tuple)) and len(value) == 2)
    else:
        ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok:
        at = "" if index is None else f"[{index}]"
        raise SpaceError(f"{field_name}{at}: value {value!r} has the wrong type{where}")


@dataclass(frozen=True)
class SearchSpace:
    """Base config + fixed values + knobs (+ conditions) + optional measured-value constraints."""

    name: str
    base: FasterViTConfig
    fixed: tuple[tuple[str, Any], ...] = ()
    knobs: tuple[Knob, ...] = ()
    constraints: tuple[str, ...] = ()
    description: str = ""
    source: Optional[str] = None
    _lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        lines = self._lines
        for k in self.knobs:
            where = _where(lines, f"knobs.{k.name}")
            m = _NAME.match(k.name)
            if not m or m.group(1) not in _CONFIG_FIELDS:
                raise SpaceError(f"knobs.{k.name}: not a FasterViTConfig field{where}; fields: "
                                 f"{sorted(_CONFIG_FIELDS)}")
            fname, idx = m.group(1), m.group(2)
            if idx is not None and (fname not in _PER_STAGE or not 0 <= int(idx) < 4):
                raise SpaceError(f"knobs.{k.name}: [i] selects a stage (0-3) of {sorted(_PER_STAGE)} only{where}")
            if k.name in seen:
                raise SpaceError(f"knobs.{k.name}: defined twice{where}")
            if k.choices is not None:
                if len(k.choices) == 0:
                    raise SpaceError(f"knobs.{k.name}: choices must not be empty{where}")
                for c in k.choices:
                    _check_value(fname, None if idx is None else int(idx), c, where)
            else:
                if k.low is None or k.high is None:
                    raise SpaceError(f"knobs.{k.name}: give either choices or low and high{where}")
                if not k.low <= k.high:
                    raise SpaceError(f"knobs.{k.name}: low={k.low} must be <= high={k.high}{where}")
                if k.log and k.low <= 0:
                    raise SpaceError(f"knobs.{k.name}: log scale needs low > 0{where}")
                _check_value(fname, None if idx is None else int(idx), k.low, where)
            for cond, _ in k.when:
                cm = _NAME.match(cond)
                if not cm or cm.group(1) not in _CONFIG_FIELDS:
                    raise SpaceError(f"knobs.{k.name}.when: {cond!r} is not a config field or knob{where}")
            seen.add(k.name)
        targets: dict[str, list[Knob]] = {}
        for k in self.knobs:
            targets.setdefault(k.target, []).append(k)
        for target, ks in targets.items():
            if len(ks) > 1 and not all(k.when for k in ks):
                names = ", ".join(k.name for k in ks)
                raise SpaceError(f"knobs {names} all set {target}: each needs a `when` that tells them apart"
                                 f"{_where(lines, f'knobs.{ks[-1].name}')}")
        for name, _value in self.fixed:
            m = _NAME.match(name)
            if not m or m.group(1) not in _CONFIG_FIELDS:
                raise SpaceError(f"fixed.{name}: not a FasterViTConfig field{_where(lines, f'fixed.{name}')}")
        try:
            self.apply({})
        except ValueError as e:
            raise SpaceError(f"base + fixed values do not make a valid config: {e}") from None

    # ------------------------------------------------------------------ points
    def _value(self, values: Mapping[str, Any], name: str) -> Any:
        if name in values:
            return values[name]
        for knob_name, v in values.items():  # a field set through a tagged knob
            if knob_name.split("@", 1)[0] == name:
                return v
        m = _parts(name)
        v = getattr(self.base, m.group(1))
        for fname, fv in self.fixed:
            if fname == m.group(1):
                v = fv
        if m.group(2) is not None:
            return v[int(m.group(2))]
        return v

    def active(self, knob: Knob, values: Mapping[str, Any]) -> bool:
        """Whether ``knob`` is sampled given the values decided so far."""
        return all(_matches(self._value(values, c), v) for c, v in knob.when)

    def apply(self, values: Mapping[str, Any]) -> FasterViTConfig:
        """The config for knob values (inactive or missing knobs keep base/fixed values)."""
        d = self.base.to_dict()
        for name, v in self.fixed:
            d[name] = list(v) if isinstance(v, tuple) else v
        set_by: dict[str, str] = {}
        for name, v in values.items():
            m = _NAME.match(name)
            if m is None or m.group(1) not in _CONFIG_FIELDS:
                raise ValueError(f"unknown knob {name!r}")
            target = name.split("@", 1)[0]
            if target in set_by:
                raise ValueError(f"knobs {set_by[target]} and {name} both set {target}")
            set_by[target] = name
            fname, idx = m.group(1), m.group(2)
            if idx is None:
                d[fname] = v
            else:
                seq = list(d[fname])
                seq[int(idx)] = v
                d[fname] = seq
        return FasterViTConfig.from_dict(d)

    def sample_random(self, rng: np.random.Generator) -> tuple[dict[str, Any], FasterViTConfig]:
        """Uniform random knob values (conditions honoured) and their config (may raise ValueError)."""
        values: dict[str, Any] = {}
        for k in self.knobs:
            if not self.active(k, values):
                continue
            if k.choices is not None:
                v = k.choices[int(rng.integers(len(k.choices)))]
            elif k.kind == "int":
                vals = k.values()
                v = vals[int(rng.integers(len(vals)))]
            elif k.log:
                low, high = k.bounds()
                v = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            else:
                v = float(rng.uniform(*k.bounds()))
            values[k.name] = v
        return values, self.apply(values)

    def params_for(self, cfg: FasterViTConfig) -> Optional[dict[str, Any]]:
        """Knob values that give ``cfg``'s architecture, or None when it is not in the space."""
        values: dict[str, Any] = {}
        for k in self.knobs:
            if not self.active(k, values):
                continue
            target = cfg.to_dict(full=True)[k.field]  # JSON form: a square resolution is one int
            if k.index is not None:
                target = target[k.index]
            if k.choices is not None:
                if target not in k.choices:
                    return None
            elif not (k.low <= target <= k.high):
                return None
            values[k.name] = target
        try:
            point = self.apply(values)
        except ValueError:
            return None
        return values if point.arch_id == cfg.replace(num_classes=point.num_classes).arch_id else None

    def size(self) -> float:
        """Number of distinct knob assignments (conditions honoured); inf with a continuous knob."""
        def count(i: int, values: dict[str, Any]) -> float:
            if i == len(self.knobs):
                return 1
            k = self.knobs[i]
            if not self.active(k, values):
                return count(i + 1, values)
            if k.size() == math.inf:
                return math.inf
            total = 0.0
            for v in k.values():
                values[k.name] = v
                total += count(i + 1, values)
                del values[k.name]
            return total
        return count(0, {})

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        base = self.base.to_dict()
        base.pop("schema_version", None)
        return dict(name=self.name, description=self.description, base=base,
                    fixed={k: list(v) if isinstance(v, tuple) else v for k, v in self.fixed},
                    knobs={k.name: k.to_dict() for k in self.knobs}, constraints=list(self.constraints))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: Optional[str] = None,
                  lines: Optional[Mapping[str, int]] = None) -> "SearchSpace":
        lines = dict(lines or {})
        if not isinstance(data, Mapping):
            raise SpaceError("a search space must be a mapping with keys name, base, fixed, knobs, constraints")
        allowed = {"name", "description", "base", "fixed", "knobs", "constraints"}
        for key in data:
            if key not in allowed:
                raise SpaceError(f"{key}: unknown top-level key{_where(lines, key)}; allowed: {sorted(allowed)}")
        base_spec = data.get("base", "faster_vit_0_224")
        try:
            base = resolve_config(base_spec)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise SpaceError(f"base: {e}{_where(lines, 'base')}") from None
        fixed = data.get("fixed") or {}
        if not isinstance(fixed, Mapping):
            raise SpaceError(f"fixed: must be a mapping of config field -> value{_where(lines, 'fixed')}")
        knobs_raw = data.get("knobs") or {}
        if not isinstance(knobs_raw, Mapping):
            raise SpaceError(f"knobs: must be a mapping of knob -> {{choices: [...]}} or {{low, high}}"
                             f"{_where(lines, 'knobs')}")
        knobs = []
        for name, spec in knobs_raw.items():
            where = _where(lines, f"knobs.{name}")
            if not isinstance(spec, Mapping):
                raise SpaceError(f"knobs.{name}: must be a mapping with choices, or low/high{where}")
            extra = set(spec) - {"choices", "low", "high", "step", "log", "when"}
            if extra:
                raise SpaceError(f"knobs.{name}: unknown key(s) {sorted(extra)}{where}")
            when = spec.get("when") or {}
            if not isinstance(when, Mapping):
                raise SpaceError(f"knobs.{name}.when: must map knob/field -> value{where}")
            when = {c: _condition(name, c, v, where) for c, v in when.items()}
            choices = spec.get("choices")
            if choices is not None and not isinstance(choices, (list, tuple)):
                raise SpaceError(f"knobs.{name}.choices: must be a list{where}")
            knobs.append(Knob(name=str(name), choices=tuple(choices) if choices is not None else None,
                              low=spec.get("low"), high=spec.get("high"), step=spec.get("step"),
                              log=bool(spec.get("log", False)), when=tuple(when.items())))
        constraints = data.get("constraints") or []
        if not isinstance(constraints, (list, tuple)) or not all(isinstance(c, str) for c in constraints):
            raise SpaceError(f"constraints: must be a list of strings like 'params<=60e6'"
                             f"{_where(lines, 'constraints')}")
        return cls(name=str(data.get("name", "unnamed")), base=base,
                   fixed=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in fixed.items()),
                   knobs=tuple(knobs), constraints=tuple(constraints), description=str(data.get("description", "")),
                   source=source, _lines=lines)

    def describe(self) -> Iterator[str]:
        yield f"space {self.name!r}" + (f" ({self.source})" if self.source else "")
        if self.description:
            yield self.description
        yield f"base: {self.base.summary()}"
        for k, v in self.fixed:
            yield f"fixed {k} = {v}"


def _condition(knob: str, field_name: str, value: Any, where: str) -> Any:
    """A ``when`` value: a plain value, or ``{in: [...]}`` (one of several)."""
    if isinstance(value, OneOf) or not isinstance(value, Mapping):
        return value
    if set(value) != {"in"} or not isinstance(value["in"], (list, tuple)) or not value["in"]:
        raise SpaceError(f"knobs.{knob}.when.{field_name}: a mapping condition must be {{in: [values...]}}{where}")
    return OneOf(tuple(value["in"]))


def _line_map(text: str) -> dict[str, int]:
    """'section.key' -> 1-based line of each key in a YAML mapping (two levels deep)."""
    import yaml

    out: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out
    if not isinstance(root, yaml.MappingNode):
        return out
    for k, v in root.value:
        out[str(k.value)] = k.start_mark.line + 1
        if isinstance(v, yaml.MappingNode):
            for k2, _ in v.value:
                out[f"{k.value}.{k2.value}"] = k2.start_mark.line + 1
    return out


def list_builtin_spaces() -> list[str]:
    root = resources.files("search_spaces") / "spaces"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_space(spec: Union[str, Path, Mapping[str, Any], SearchSpace, None] = None) -> SearchSpace:
    """A space from a built-in name (``default``), a YAML/JSON file, a dict, or a SearchSpace."""
    import yaml

    if spec is None:
        spec = "default"
    if isinstance(spec, SearchSpace):
        return spec
    if isinstance(spec, Mapping):
        return SearchSpace.from_dict(spec)
    name = str(spec)
    if name in list_builtin_spaces():
        text = (resources.files("search_spaces") / "spaces" / f"{name}.yaml").read_text()
        source = f"built-in:{name}"
    else:
        path = Path(name)
        if not path.exists():
            raise SpaceError(f"search space {name!r} is neither a built-in space ({', '.join(list_builtin_spaces())}) "
                             f"nor an existing file")
        try:
            text, source = read_text(path, "a search-space YAML file"), str(path)
        except ValueError as e:
            raise SpaceError(str(e)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpaceError(f"{source}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    repeated = repeated_key(text)
    if repeated is not None:
        key, first, again = repeated
        raise SpaceError(f"{source}: {key} is given twice (lines {first} and {again}); YAML keeps only the last one: "
                         f"remove one")
    try:
        return SearchSpace.from_dict(data, source=source, lines=_line_map(text))
    except SpaceError as e:
        raise SpaceError(f"{source}: {e}") from None


def knob_distributions(space: SearchSpace) -> Sequence[Knob]:
    """The knobs in sampling order (for samplers that want the list up front)."""
    return space.knobs
