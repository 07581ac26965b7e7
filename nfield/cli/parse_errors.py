"""A malformed command line in one line: ``nfield: error: --steps expects an integer, got 'abc'``.

tyro reports a flag it does not know, a value of the wrong type or a missing argument in a box of
13 to 40 lines. `one_line_parse_errors` registers a hook on tyro's parse errors
(``tyro._errors.on_parse_error``, in tyro 1.0.17; a tyro without it shows its own box) that raises
`CommandLineError` instead: one line naming the flag, what it expects and, for a flag the command
does not have, the command's flags closest to it (flags ending in the given name, as
``--distill-steps`` for ``--steps``, else `difflib`'s). `nfield.cli.main` prints it and exits with
status 2. ``--help`` is untouched.

`command_flags` lists a command's flags as tyro spells them, from the command's dataclass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import itertools
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Union

import tyro

from nfield.flag_hints import HIDDEN_ALIASES


class CommandLineError(Exception):
    """A malformed command line, described in one line (the CLI exits with status 2)."""


@dataclass(frozen=True)
class Flag:
    """One flag of a command: its spellings (``--progress`` and ``--no-progress``, or a flag and its
    aliases) and what value it expects in words ("" for a switch, which takes none)."""

    names: tuple[str, ...]
    expects: str

    def shown(self) -> str:
        """``--lr (a number)``, or the switch's spellings."""
        return f"{self.names[0]} ({self.expects})" if self.expects else "/".join(self.names)


def command_flags(command: type, prefix: str = "") -> list[Flag]:
    """The flags of the command dataclass `command` as tyro spells them: ``--`` and the field's
    name in kebab case (or its `tyro.conf.arg` name, and its aliases), a nested dataclass's fields
    under ``name.`` unless it is marked `tyro.conf.OmitArgPrefixes`, booleans as ``--x`` and
    ``--no-x``. Positional arguments are not flags, and the old spellings --help hides
    (`nfield.flag_hints.hidden_alias`) are not listed."""
    hints = typing.get_type_hints(command, include_extras=True)
    flags: list[Flag] = []
    for field in dataclasses.fields(command):
        base, metadata = _strip_annotations(hints[field.name])
        if tyro.conf.Positional in metadata:
            continue
        configured = [m for m in metadata if hasattr(m, "aliases") and hasattr(m, "help_behavior_hint")]  # tyro.conf.arg
        name = _kebab(next((c.name for c in configured if c.name), field.name))
        aliases = tuple(alias for c in configured for alias in (c.aliases or ()) if alias not in HIDDEN_ALIASES)
        inner = _strip_optional(base)
        if dataclasses.is_dataclass(inner):
            flags += command_flags(inner, prefix if tyro.conf.OmitArgPrefixes in metadata else f"{prefix}{name}.")
        elif inner is bool:  # Optional[bool] too: tyro makes both a --x / --no-x pair
            flags.append(Flag((f"--{prefix}{name}", f"--{prefix}no-{name}"), ""))
        else:
            flags.append(Flag((f"--{prefix}{name}", *aliases), expected_value(inner)))
    return flags


def expected_value(hint: Any) -> str:
    """What a flag of type `hint` takes, in words: "an integer", "a number", "one of a, b", "6 numbers"."""
    hint = _strip_optional(_strip_annotations(hint)[0])
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return _PLURALS.get(items[0], "values")
        if len(set(items)) == 1:
            return f"{len(items)} {_PLURALS.get(items[0], 'values')}"
        return f"{len(items)} values"
    if hint is bool:
        return "True or False"
    return _SINGULARS.get(hint, getattr(hint, "__name__", str(hint)))


_SINGULARS = {int: "an integer", float: "a number", str: "a string", Path: "a path"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", Path: "paths"}


@contextlib.contextmanager
def one_line_parse_errors(argv: list[str], commands: dict[str, type]) -> Iterator[None]:
    """Within the block, a tyro parse error of `argv` (``nfield``'s arguments, the command first;
    `commands` maps command names to their dataclasses) raises `CommandLineError` with one line;
    errors of kinds it does not know keep tyro's own report."""
    try:
        errors = importlib.import_module("tyro._errors")
    except ImportError:
        errors = None
    if errors is None or not hasattr(errors, "on_parse_error"):  # an older tyro: its own report
        yield
        return

    def hook(event: Any) -> None:
        message = _message(event, errors, argv, commands)
        if message is not None:
            raise CommandLineError(message)

    with errors.on_parse_error(hook):
        yield


def _message(event: Any, errors: Any, argv: list[str], commands: dict[str, type]) -> str | None:
    """The line for a tyro parse-error `event` (None: one this module does not describe)."""
    command = argv[0] if argv and argv[0] in commands else None
    see = f" (see nfield {command} --help)" if command else " (see nfield --help)"
    if command is None and isinstance(event, (errors.UnrecognizedArgs, errors.MissingSubcommand)):
        return _unknown_command(argv, commands) + see
    if isinstance(event, errors.UnrecognizedArgs):
        return _unknown(event.tokens, argv, command, commands) + see
    if isinstance(event, errors.MissingArgs):
        missing = [_spelling(a.arg) for a in event.missing_arguments]
        usage = f"nfield {command} {' '.join(missing)} [OPTIONS]" if command else "nfield COMMAND ..."
        what = _gist(getattr(getattr(event.missing_arguments[0].arg, "field", None), "helptext", None))
        return f"missing {' and '.join(missing)}{f' ({what})' if what else ''}: {usage}" + see
    if isinstance(event, errors.InvalidChoice):
        flag = _spelling(event.argument)
        choices = [str(c) for c in event.choices if str(c) != "None"]  # tyro's set, with DisallowNone's None
        close = difflib.get_close_matches(event.value, choices, n=1, cutoff=0.5)
        expects = _expects(flag, event.argument, command, commands, fallback="one of " + ", ".join(sorted(choices)))
        return f"{flag} expects {expects}, got '{event.value}'" + (f"; did you mean {close[0]}?" if close else "") + see
    if isinstance(event, errors.BadValue):
        flag = _spelling(event.argument)
        if event.reason == "too_few_values":
            return f"{flag} expects {_expects(flag, event.argument, command, commands)}, got no value" + see
        return f"{flag} takes no value, got '{event.offending_value}'" + see
    if isinstance(event, errors.InstantiationFailure):
        if event.argument is None:
            return f"{event.message}" + see
        flag = _spelling(event.argument)
        expects = _expects(flag, event.argument, command, commands)
        lowered = event.argument.lowered
        value = _value_of(getattr(lowered, "name_or_flags", None) or (flag,), argv, getattr(lowered, "nargs", None))
        got = f"got '{value}'" if value is not None else f"could not read it ({event.message})"
        return f"{flag} expects {expects}, {got}" + see
    return None


def _unknown_command(argv: list[str], commands: dict[str, type]) -> str:
    """The line for a command line whose first argument is not a command (or that has none)."""
    listed = "; commands: " + ", ".join(commands)
    if not argv:
        return "no command given" + listed
    if argv[0].startswith("-"):
        return f"the command comes first, before {argv[0]}: nfield COMMAND [ARGUMENTS]" + listed
    close = difflib.get_close_matches(argv[0], list(commands), n=1, cutoff=0.5)
    return f"unknown command '{argv[0]}'" + (f"; did you mean {close[0]}?" if close else "") + listed


def _unknown(tokens: list[str], argv: list[str], command: str, commands: dict[str, type]) -> str:
    """The line for arguments `command` takes in no flag or positional: a flag it does not have,
    with the closest ones it does (flags ending in its name first), a value after a switch, or an
    extra argument."""
    flags = command_flags(commands[command])
    by_name = {name: flag for flag in flags for name in flag.names}
    unknown = [t.split("=", 1)[0] for t in tokens if _is_flag(t)]
    if not unknown:
        before = argv[argv.index(tokens[0]) - 1] if tokens[0] in argv[1:] else None
        if before in by_name and not by_name[before].expects:
            switch = by_name[before].names
            return f"{before} takes no value (it is a switch: {' or '.join(switch)}), got '{tokens[0]}'"
        return f"{command}: unexpected argument '{tokens[0]}'"
    given = unknown[0]
    ending = [name for name in by_name if len(given) > 2 and name.endswith("-" + given.lstrip("-"))]
    close = ending or difflib.get_close_matches(given, list(by_name), n=3, cutoff=0.6)
    suggested = [flag.shown() for flag in dict.fromkeys(by_name[name] for name in close)][:3]
    line = f"{command} has no flag {given}"
    if suggested:
        line += "; did you mean " + (", ".join(suggested[:-1]) + " or " if len(suggested) > 1 else "") + suggested[-1] + "?"
    others = list(dict.fromkeys(unknown[1:]))
    if others:
        line += f"; nor {', '.join(others)}"
    return line


def _gist(help_text: Any, most: int = 100) -> str:
    """The start of a help text (tyro's, maybe lazy) on one line, without parenthesised asides: up to
    its first ';' or ':', at most `most` characters."""
    if callable(help_text):
        help_text = help_text()
    if not isinstance(help_text, str):
        return ""
    text = re.sub(r"\s*\([^()]*\)", "", " ".join(help_text.split()))  # without its asides in parentheses
    for stop in (";", ":"):
        text = text.split(stop, 1)[0]
    return text if len(text) <= most else text[: text.rfind(" ", 0, most)] + " ..."


def _spelling(argument: Any) -> str:
    """How the user writes `argument` (tyro's `ArgumentDefinition`): its flag, or a positional's metavar."""
    lowered = getattr(argument, "lowered", None)
    flags = [f for f in (getattr(lowered, "name_or_flags", None) or ()) if str(f).startswith("-")]
    if flags:  # tyro lists a flag's aliases (old names kept for a release) before its own name
        return str(flags[-1])
    return str(getattr(lowered, "metavar", None) or argument.display_name())


def _expects(flag: str, argument: Any, command: str | None, commands: dict[str, type], fallback: str | None = None) -> str:
    """What `flag` expects, from the command's dataclass (else `fallback`, else tyro's metavar)."""
    if command is not None:
        for known in command_flags(commands[command]):
            if flag in known.names and known.expects:
                return known.expects
    return fallback or str(getattr(getattr(argument, "lowered", None), "metavar", None) or "another value")


def _value_of(spellings: Any, argv: list[str], nargs: Any = None) -> str | None:
    """The value given in `argv` to the flag spelt any of `spellings` (``--flag value`` or
    ``--flag=value``; the last one wins); a flag of several values (`nargs`) gets the arguments up
    to the next flag."""
    value = None
    for i, token in enumerate(argv):
        for flag in map(str, spellings):
            if token == flag and i + 1 < len(argv):
                values = argv[i + 1 : i + 2]
                if nargs not in (None, 1, "?"):
                    values = list(itertools.takewhile(lambda t: not _is_flag(t), argv[i + 1 :]))
                value = " ".join(values) if values else None
            elif token.startswith(flag + "="):
                value = token[len(flag) + 1 :]
    return value


def _is_flag(token: str) -> bool:
    """``--x`` or ``-x``, not a negative number."""
    return token.startswith("--") or (token.startswith("-") and len(token) > 1 and not token[1].isdigit() and token[1] != ".")


def _strip_annotations(hint: Any) -> tuple[Any, list[Any]]:
    """(the type inside any ``Annotated`` layers, their metadata)."""
    metadata: list[Any] = []
    while typing.get_origin(hint) is typing.Annotated:
        metadata += list(hint.__metadata__)
        hint = hint.__origin__
    return hint, metadata


def _strip_optional(hint: Any) -> Any:
    """``X`` of ``Optional[X]``; other types unchanged."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1:
            return _strip_annotations(members[0])[0]
    return hint


def _kebab(name: str) -> str:
    return name.replace("_", "-")
