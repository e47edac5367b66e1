"""Command-line options generated from pydantic-settings models: the one configuration source.

A command declares the settings models it reads (:func:`add_options`). Every field becomes a
flag ``--name`` whose help states the description, the default and the environment variable
(the model's ``env_prefix`` + the name); :func:`resolve` builds each model from the flags given,
then its variables, then the defaults, so a default is written once, on the field. A value that
does not validate is an :class:`OptionError`: one line per value, naming the flag or the
variable it came from. ``--show-config`` prints what a command would run with.

Models shared by several commands (the Kafka cluster, the store, the fleet file, the runtime)
use ``TAGFLEET_<NAME>``; a command's own options use ``TAGFLEET_<COMMAND>_<NAME>`` wherever the
same name would mean something else to another command (``TAGFLEET_TAG_BATCH_SIZE`` is not the
service's ``TAGFLEET_BATCH_SIZE``).
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode
from pydantic_settings.exceptions import SettingsError

Group = type[BaseSettings]
SHARED_PREFIX = "TAGFLEET_"


def split_commas(value: Any) -> Any:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; anything else as it is."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


# A list setting written as ``a,b,c`` in a flag or a variable (not JSON: NoDecode).
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_commas)]
Model = TypeVar("Model", bound=BaseSettings)

# ``Field(json_schema_extra=NO_FLAG)``: a secret, settable only by its variable (or a file):
# flags show in the process list to every user of the host.
NO_FLAG: dict[str, Any] = {"flag": False}
_MASK = "**********"


class OptionError(Exception):
    """Values that do not validate, one line each, naming where each came from."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class Options:
    """The resolved settings of one command, looked up by model: ``options[Runtime]``."""

    def __init__(self, values: dict[Group, BaseSettings]) -> None:
        self._values = values

    def __getitem__(self, group: type[Model]) -> Model:
        value = self._values[group]
        assert isinstance(value, group)
        return value

    def __iter__(self) -> Iterator[BaseSettings]:
        return iter(self._values.values())

    def show(self) -> dict[str, Any]:
        """Every variable of the command and its resolved value; secrets masked when set."""
        shown: dict[str, Any] = {}
        for value in self:
            dumped = value.model_dump(mode="json")
            for name, field in type(value).model_fields.items():
                if _is_secret(field):
                    dumped[name] = None if getattr(value, name) is None else _MASK
                shown[env_name(type(value), name)] = dumped[name]
        return shown


def env_name(group: Group, name: str) -> str:
    """The environment variable of field ``name`` of ``group``."""
    return str(group.model_config.get("env_prefix", "")) + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def has_flag(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return not (isinstance(extra, dict) and extra.get("flag") is False)


def add_options(parser: argparse.ArgumentParser, groups: Sequence[Group]) -> None:
    """A flag for every field of ``groups`` (but secrets), and ``--show-config``.

    Flags default to ``None`` ("not given"), so that :func:`resolve` lets the variable or the
    field's default decide; the value is validated by the model, not by argparse, so a flag and
    a variable get the same checks and the same messages.
    """
    parser.set_defaults(option_groups=tuple(groups), command_prog=parser.prog)
    seen: set[str] = set()
    for group in groups:
        for name, field in group.model_fields.items():
            if name in seen:
                raise ValueError(f"{name} is declared by two settings models of one command")
            seen.add(name)
            if not has_flag(field):
                continue
            default = "required" if field.is_required() else f"default: {show_default(field)}"
            help_text = f"{field.description or ''} ({default}; env {env_name(group, name)})"
            kind = base_type(field.annotation)
            if kind is bool:
                parser.add_argument(
                    flag_name(name),
                    dest=name,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=help_text,
                )
                continue
            allowed = choices(field.annotation)
            parser.add_argument(
                flag_name(name),
                dest=name,
                default=None,
                choices=allowed,
                metavar=None if allowed else _metavar(kind, name),
                help=help_text,
            )
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print the settings this command would run with (flags, then TAGFLEET_* variables,"
        " then defaults) as JSON, secrets masked, and exit",
    )


def resolve(args: argparse.Namespace) -> Options:
    """Build the command's settings models: flags given > variables > defaults."""
    values: dict[Group, BaseSettings] = {}
    problems: list[str] = []
    for group in getattr(args, "option_groups", ()):
        given = {
            name: getattr(args, name)
            for name in group.model_fields
            if getattr(args, name, None) is not None
        }
        try:
            values[group] = group(**given)
        except ValidationError as exc:
            problems += [_describe(group, error, given) for error in exc.errors()]
        except SettingsError as exc:
            problems.append(_settings_error(group, exc))
        except ValueError as exc:  # a source of our own (e.g. an unreadable secret file)
            problems.append(str(exc))
    if problems:
        raise OptionError(problems)
    return Options(values)


def print_config(options: Options) -> None:
    print(json.dumps(options.show(), indent=2, sort_keys=True))


def run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    refuse: Callable[[argparse.Namespace], str | None] = lambda args: None,
) -> int:
    """Parse ``argv``, resolve the command's settings, call its ``handler(args, options)``.

    A value that does not validate (or that ``refuse`` refuses) exits 2 with one line per
    value, naming the flag or the variable it came from; ``--show-config`` prints the
    settings instead of running.
    """
    args = parser.parse_args(argv)
    command = getattr(args, "command_prog", parser.prog)
    try:
        problem = refuse(args)
        if problem:
            raise OptionError([problem])
        options = resolve(args)
    except OptionError as exc:
        for line in exc.lines:
            print(f"{command}: error: {line}", file=sys.stderr)
        return 2
    for line in unread_variables(getattr(args, "option_groups", ())):
        print(f"{command}: warning: {line}", file=sys.stderr)
    if args.show_config:
        print_config(options)
        return 0
    return int(args.handler(args, options) or 0)


def unread_variables(groups: Sequence[Group]) -> list[str]:
    """``TAGFLEET_<NAME>`` variables set for a command that reads ``TAGFLEET_<CMD>_<NAME>``
    instead: another command's setting (the service's ``TAGFLEET_BATCH_SIZE`` for ``tag``) or
    the name this option had before it got its command's namespace. Said, never applied."""
    own = {env_name(group, name) for group in groups for name in group.model_fields}
    lines = []
    for group in groups:
        if env_name(group, "") == SHARED_PREFIX:
            continue
        for name in group.model_fields:
            bare = SHARED_PREFIX + name.upper()
            if bare in os.environ and bare not in own:
                lines.append(
                    f"{bare} is not read by this command; its option is {env_name(group, name)}"
                )
    return lines


def show_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if value is None:
        return "unset"
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        return str(Path("~") / value.relative_to(Path.home()))
    return str(value)


def base_type(annotation: Any) -> type:
    """The type a field's value is parsed to: ``int`` for ``int | None``, ``str`` for a
    ``Literal``, ``tuple`` for any tuple."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return base_type(args[0])
    if origin is typing.Literal:
        return str
    if origin is tuple:
        return tuple
    return annotation if isinstance(annotation, type) else str


def choices(annotation: Any) -> list[str] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return choices(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return choices(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return None


def _metavar(kind: type, name: str) -> str:
    if kind is tuple:
        return "A,B"
    if kind in (int, float):
        return kind.__name__.upper()
    return name.upper()


def _is_secret(field: FieldInfo) -> bool:
    return base_type(field.annotation) is SecretStr


def _describe(group: Group, error: Any, given: dict[str, Any]) -> str:
    """One line for one validation error: where the value came from, the value unless it is
    a secret, what is wrong."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = group.model_fields.get(name)
    if field is None:
        return error["msg"]
    variable = env_name(group, name)
    if error["type"] == "missing":
        return f"{flag_name(name)} (or {variable}) is required"
    if name in given:
        source, raw = flag_name(name), given[name]
    else:
        source, raw = variable, os.environ.get(variable)
    shown = "" if _is_secret(field) or raw is None else f"={raw!r}"
    return f"{source}{shown}: {error['msg']}"


def _settings_error(group: Group, exc: SettingsError) -> str:
    for name in group.model_fields:
        if f'"{name}"' in str(exc):
            return f"{env_name(group, name)}: cannot be parsed ({exc.__cause__ or exc})"
    return str(exc)
