"""What a command-line flag's help says about its value when it is not given.

Flags whose unset value is None mean "the preset's" or "what the help text says" (the run's own
image, the training images' width...); tyro would print "(default: None)" after them, which says
neither. Annotate such a flag ``Annotated[Optional[int], STATED]`` (its help states the default) or
``Annotated[Optional[int], PRESET]`` (a model hyper-parameter: the chosen model's preset value).

A renamed flag keeps its old spelling for a release as a `hidden_alias`: still parsed, left out of
--help and of the flags an error suggests.
"""

from __future__ import annotations

import copy
from typing import Any

import tyro

#: The help text says what an unset flag means: no hint after it.
STATED = tyro.conf.arg(help_behavior_hint="")
#: An unset model hyper-parameter keeps the chosen model's preset value.
PRESET = tyro.conf.arg(help_behavior_hint="(default: the model's preset)")


#: Spellings that parse as the flag they alias but that --help does not show (`hidden_alias`).
HIDDEN_ALIASES: set[str] = set()


def hidden_alias(*names: str, hint: str | None = PRESET.help_behavior_hint) -> Any:
    """The `tyro.conf.arg` of a flag that also answers to `names` (``"--lods"``), which --help leaves
    out: the old spellings of renamed flags, kept working for a release. `hint` is the help's note on
    the unset value (default: the model's preset; None: tyro's "(default: ...)")."""
    HIDDEN_ALIASES.update(names)
    return tyro.conf.arg(aliases=names, help_behavior_hint=hint)


def _hide_aliases_in_help() -> None:
    """Leave `HIDDEN_ALIASES` out of tyro's --help, where a flag's aliases are listed with its name.

    tyro (1.0.17 to 1.0.x) has no switch for this: an alias is parsed and shown alike, and a
    `tyro.conf.Suppress` field is neither parsed nor shown. Its help (both backends, the usage line
    and the options) spells a flag's names only through ``ArgumentDefinition.get_invocation_text``;
    this wraps it to drop the hidden aliases of that flag. Parsing reads the names elsewhere, so
    they keep working. A tyro without that method shows the aliases, nothing worse."""
    try:
        from tyro._arguments import ArgumentDefinition
    except ImportError:
        return
    shown = getattr(ArgumentDefinition, "get_invocation_text", None)
    if shown is None or getattr(shown, "hides_aliases", False):
        return

    def get_invocation_text(self: Any) -> Any:
        hidden = set(getattr(self.field.argconf, "aliases", None) or ()) & HIDDEN_ALIASES
        if not hidden:
            return shown(self)
        lowered = self.lowered
        trimmed = copy.copy(lowered)
        trimmed.name_or_flags = tuple(name for name in lowered.name_or_flags if name not in hidden)
        self.__dict__["lowered"] = trimmed  # `lowered` is a cached property
        try:
            return shown(self)
        finally:
            self.__dict__["lowered"] = lowered

    get_invocation_text.hides_aliases = True  # type: ignore[attr-defined]
    ArgumentDefinition.get_invocation_text = get_invocation_text


_hide_aliases_in_help()
