"""Config <-> module registries shared by every component family, and the config helpers they use.

Each component (an encoding, a network, a field) is described by a frozen dataclass config and
built by `Registry.build(cfg, ...)`. Configs travel as tiny-cuda-nn style dictionaries,
``{"otype": "HashGrid", "n_levels": 16, ...}``, so a run's ``config.json`` rebuilds the exact
module and people can bring the instant-ngp key names they already use. A config nested in another
(a field's hash grid, its MLPs) travels the same way, with its own ``otype``.

- `config_from_dict` / `config_to_dict`: a (nested) config from and to plain JSON data; keys that
  an older release wrote under another name (`Registry.register`'s ``renamed``) are read under
  their current one.
- `apply_overrides`: the keys a user set on the command line, each on the (nested) config field
  that has it; a key the chosen model does not have is refused in one line.

Example::

    >>> from nfield.encodings import ENCODINGS
    >>> cfg = ENCODINGS.from_dict({"otype": "Frequency", "n_frequencies": 4})
    >>> ENCODINGS.build(cfg, 2).out_dim
    18
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping, TypeVar

from nfield.errors import NfieldError

T = TypeVar("T")

#: Every registry made, to find the one a nested config belongs to.
_REGISTRIES: list[Registry] = []
#: config class -> {key an older release wrote: its current name, dotted when it moved into a nested config}
_RENAMED: dict[type, dict[str, str]] = {}


class Registry:
    """Maps a type name (``otype``) to its config dataclass and the module class it builds.

    Args:
        family: what the registry holds, used in error messages ("encoding", "network", "field").
        config_first: the modules take their config first (``RadianceField(cfg, aabb)``); otherwise
            last, after their dimensions (``HashGrid(in_dim, cfg)``).
    """

    def __init__(self, family: str, config_first: bool = False):
        self.family = family
        self.config_first = config_first
        self._by_name: dict[str, tuple[type, Callable[..., Any]]] = {}
        self._by_config: dict[type, str] = {}
        _REGISTRIES.append(self)

    def register(self, otype: str, config_cls: type, renamed: dict[str, str] | None = None) -> Callable[[type], type]:
        """Class decorator: ``@ENCODINGS.register("HashGrid", HashGridConfig)``.

        `renamed` maps keys of older run configs to their current names, so old runs still load; a
        dotted name puts the value in a nested config (``{"density_width": "density.n_neurons"}``).
        """

        def wrap(module_cls: type) -> type:
            self._by_name[otype] = (config_cls, module_cls)
            self._by_config[config_cls] = otype
            if renamed:
                _RENAMED.setdefault(config_cls, {}).update(renamed)
            return module_cls

        return wrap

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, cfg: Any) -> bool:
        """Whether `cfg` is a config of this registry."""
        return type(cfg) in self._by_config

    def otype(self, cfg: Any) -> str:
        try:
            return self._by_config[type(cfg)]
        except KeyError:
            raise NfieldError(f"{type(cfg).__name__} is not a registered {self.family} config") from None

    def config_class(self, otype: str) -> type:
        """The config dataclass of the type `otype`; `NfieldError` naming the known ones."""
        if otype not in self._by_name:
            raise NfieldError(f"unknown {self.family} type '{otype}'; known: {', '.join(self.names)}")
        return self._by_name[otype][0]

    def module_class(self, cfg: Any) -> Callable[..., Any]:
        """The module class `cfg` builds."""
        return self._by_name[self.otype(cfg)][1]

    def build(self, cfg: Any, *args: Any) -> Any:
        """Build the module for `cfg` with the positional `args` (dimensions; a field's box or octree),
        before the config or after it (`config_first`)."""
        module_cls = self.module_class(cfg)
        return module_cls(cfg, *args) if self.config_first else module_cls(*args, cfg)

    def to_dict(self, cfg: Any) -> dict[str, Any]:
        """``{"otype": name, **fields}``, JSON-serialisable; nested registered configs carry their own otype."""
        return {"otype": self.otype(cfg), **config_to_dict(cfg)}

    def from_dict(self, data: dict[str, Any]) -> Any:
        """Inverse of `to_dict`; unknown types or keys raise `NfieldError` naming the valid ones."""
        if not isinstance(data, dict) or "otype" not in data:
            raise NfieldError(f"a {self.family} config needs an 'otype' key (one of: {', '.join(self.names)})")
        name = data["otype"]
        config_cls = self.config_class(name)
        return config_from_dict(config_cls, {k: v for k, v in data.items() if k != "otype"}, what=name)


def _registry_of(config_cls: type) -> Registry | None:
    return next((registry for registry in _REGISTRIES if config_cls in registry._by_config), None)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The fields of the dataclass config `cfg` as plain data (`dataclasses.asdict`), except that a
    nested config of a registry is written by it, with its ``otype``."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        registry = _registry_of(type(value))
        return registry.to_dict(value) if registry is not None else config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def config_from_dict(config_cls: type, data: dict[str, Any], what: str | None = None, base: Any = None) -> Any:
    """Build a (possibly nested) dataclass config from plain JSON data, rejecting unknown keys.

    Keys an older release wrote under another name are read under their current one (see
    `Registry.register`). A nested config given with an ``otype`` is read by its registry; one
    without takes the keys it is given over the field's default (`base`: the config whose values the
    missing keys keep; None: the class defaults). Lists become tuples for tuple-typed fields, so a
    config survives a JSON round trip unchanged.
    """
    what = what or config_cls.__name__
    data = _current_names(config_cls, data, what)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NfieldError(f"unknown key(s) {', '.join(map(repr, unknown))} for {what}; valid keys: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = getattr(base, name) if base is not None else _default_of(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            registry = _registry_of(type(default))
            if registry is not None and "otype" in value:
                value = registry.from_dict(value)
            else:
                value = config_from_dict(type(default), value, what=f"{what}.{name}", base=default)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return dataclasses.replace(base, **values) if base is not None else config_cls(**values)


def _current_names(config_cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """`data` with the keys of older releases under their current names (nested ones in nested dicts)."""
    renamed = _RENAMED.get(config_cls, {})
    if not isinstance(data, dict) or not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        value = data.pop(old)
        *outer, key = new.split(".")
        target = data
        for part in outer:
            nested = target.get(part, {})
            target[part] = dict(nested) if isinstance(nested, dict) else nested
            target = target[part]
            if not isinstance(target, dict):
                raise NfieldError(f"{what}: '{old}' belongs in '{part}', which is not a config")
        if key in target:
            raise NfieldError(f"{what}: '{old}' is the older name of '{new}'; give one of them")
        target[key] = value
    return data


def apply_overrides(
    cfg: T,
    overrides: Mapping[str, Any],
    model: str,
    paths: Mapping[str, str] | None = None,
    others: Mapping[str, Any] | None = None,
) -> T:
    """`cfg` with each key of `overrides` (the keys a user set) set on the (possibly nested) config
    field of that name: on every field of that name in `cfg` and the configs nested in it, at any
    depth (a field's encoding and network, a radiance field's hash grid, NGLOD's octree). `paths`
    sends a key to one dotted place instead (``{"occupancy_resolution": "occupancy.resolution"}``).

    A key that reaches no field is an `NfieldError`, one line naming its flag and the model `model`:
    ``--longest-axis-cells does not apply to model 'ngp'; it applies to the kilonerf model only``,
    naming the models among `others` (name -> config) that have it, or else the model's options.
    Every replaced config is checked again by its ``__post_init__``.
    """
    paths = paths or {}
    for key, value in overrides.items():
        if key in paths:
            cfg = _set_path(cfg, paths[key].split("."), value)
            continue
        changed, found = _set_everywhere(cfg, key, value)
        if not found:
            raise NfieldError(_refusal(key, model, cfg, others or {}))
        cfg = changed
    return cfg


def _is_config(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _set_everywhere(cfg: Any, key: str, value: Any) -> tuple[Any, bool]:
    changes, found = {}, False
    for f in dataclasses.fields(cfg):
        current = getattr(cfg, f.name)
        if _is_config(current):
            nested, hit = _set_everywhere(current, key, value)
            if hit:
                changes[f.name], found = nested, True
        elif f.name == key:
            changes[f.name], found = value, True
    return (dataclasses.replace(cfg, **changes) if changes else cfg), found


def _set_path(cfg: Any, parts: list[str], value: Any) -> Any:
    head, *rest = parts
    if not any(f.name == head for f in dataclasses.fields(cfg)):
        raise NfieldError(f"{type(cfg).__name__} has no field '{head}'")
    return dataclasses.replace(cfg, **{head: _set_path(getattr(cfg, head), rest, value) if rest else value})


def config_keys(cfg: Any) -> list[str]:
    """The names of the fields `apply_overrides` can set on `cfg` (its own and its nested configs'), sorted."""
    keys: set[str] = set()
    for f in dataclasses.fields(cfg):
        current = getattr(cfg, f.name)
        keys |= set(config_keys(current)) if _is_config(current) else {f.name}
    return sorted(keys)


def _refusal(key: str, model: str, cfg: Any, others: Mapping[str, Any]) -> str:
    flag = "--" + key.replace("_", "-")
    takers = [name for name, other in others.items() if name != model and _is_config(other) and key in config_keys(other)]
    if takers:
        return (
            f"{flag} does not apply to model '{model}'; it applies to the {', '.join(takers)} model{'s' * (len(takers) > 1)} only"
        )
    options = ", ".join("--" + k.replace("_", "-") for k in config_keys(cfg)) or "none"
    return f"{flag} does not apply to model '{model}'; its options: {options}"


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None
