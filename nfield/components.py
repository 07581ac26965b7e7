"""Config <-> module registries shared by every component family.

Each component (an encoding, a network) is described by a frozen dataclass config and built by
`Registry.build(cfg, ...)`. Configs travel as tiny-cuda-nn style dictionaries,
``{"otype": "HashGrid", "n_levels": 16, ...}``, so a run's ``config.json`` rebuilds the exact
module and people can bring the instant-ngp key names they already use.

Example::

    >>> from nfield.encodings import ENCODINGS
    >>> cfg = ENCODINGS.from_dict({"otype": "Frequency", "n_frequencies": 4})
    >>> ENCODINGS.build(cfg, 2).out_dim
    18
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from nfield.errors import NfieldError


class Registry:
    """Maps a type name (``otype``) to its config dataclass and the module class it builds.

    Args:
        family: what the registry holds, used in error messages ("encoding", "network").
    """

    def __init__(self, family: str):
        self.family = family
        self._by_name: dict[str, tuple[type, Callable[..., Any]]] = {}
        self._by_config: dict[type, str] = {}
        self._renamed: dict[str, dict[str, str]] = {}

    def register(self, otype: str, config_cls: type, renamed: dict[str, str] | None = None) -> Callable[[type], type]:
        """Class decorator: ``@ENCODINGS.register("HashGrid", HashGridConfig)``.

        `renamed` maps keys of older run configs to their current names, so old runs still load.
        """

        def wrap(module_cls: type) -> type:
            self._by_name[otype] = (config_cls, module_cls)
            self._by_config[config_cls] = otype
            self._renamed[otype] = renamed or {}
            return module_cls

        return wrap

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def otype(self, cfg: Any) -> str:
        try:
            return self._by_config[type(cfg)]
        except KeyError:
            raise NfieldError(f"{type(cfg).__name__} is not a registered {self.family} config") from None

    def build(self, cfg: Any, *args: Any) -> Any:
        """Build the module for `cfg`; positional `args` (dimensions) come before the config."""
        _, module_cls = self._by_name[self.otype(cfg)]
        return module_cls(*args, cfg)

    def to_dict(self, cfg: Any) -> dict[str, Any]:
        """``{"otype": name, **fields}``, JSON-serialisable."""
        return {"otype": self.otype(cfg), **dataclasses.asdict(cfg)}

    def from_dict(self, data: dict[str, Any]) -> Any:
        """Inverse of `to_dict`; unknown types or keys raise `NfieldError` naming the valid ones."""
        if not isinstance(data, dict) or "otype" not in data:
            raise NfieldError(f"a {self.family} config needs an 'otype' key (one of: {', '.join(self.names)})")
        name = data["otype"]
        if name not in self._by_name:
            raise NfieldError(f"unknown {self.family} type '{name}'; known: {', '.join(self.names)}")
        config_cls, _ = self._by_name[name]
        renamed = self._renamed[name]
        values = {renamed.get(k, k): v for k, v in data.items() if k != "otype"}
        return config_from_dict(config_cls, values, what=name)


def config_from_dict(config_cls: type, data: dict[str, Any], what: str | None = None) -> Any:
    """Build a (possibly nested) dataclass config from plain JSON data, rejecting unknown keys.

    Lists become tuples for tuple-typed fields, so a config survives a JSON round trip unchanged.
    """
    what = what or config_cls.__name__
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NfieldError(f"unknown key(s) {', '.join(map(repr, unknown))} for {what}; valid keys: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = _default_of(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = config_from_dict(type(default), value, what=f"{what}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return config_cls(**values)


def replace_fields(cfg: Any, overrides: dict[str, Any]) -> tuple[Any, set[str]]:
    """`dataclasses.replace` with only the keys `cfg` has; returns the new config and the keys used."""
    names = {f.name for f in dataclasses.fields(cfg)}
    used = {k: v for k, v in overrides.items() if k in names}
    return (dataclasses.replace(cfg, **used) if used else cfg), set(used)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None
