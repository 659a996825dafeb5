"""Nested dicts of config values converted to frozen dataclasses' declared types and bounds.

Generic: reads each field's type hint (bool, int, float, str, Literal[...], tuple[T, ...],
T | None, a nested dataclass) and what is declared next to it: a range (`bounded`), the keys of a
table it must name (`one_of`), the named flag that sets it (`flag=`). It knows nothing of
alexnet-dali's configs (`config/schema.py` declares them). A refused key or value is a
ConfigError naming where it came from (`Source`), the key, the value and what is allowed.
`choices` and `flag_keys` read the declarations back, for the CLI.
"""

from __future__ import annotations

import math
import types
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from alexnet_dali.errors import ConfigError

T = TypeVar("T")

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


class Invalid(Exception):
    """A value the field cannot take; the message says what is allowed."""


@dataclass(frozen=True)
class Bounds:
    """A numeric range: each limit optional, `ge`/`le` inclusive, `gt`/`lt` exclusive."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, v: float) -> bool:
        """True if `v` is within every given limit."""
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def __str__(self) -> str:
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            return (f"in {'[' if self.ge is not None else '('}{low:g}, {high:g}"
                    f"{']' if self.le is not None else ')'}")
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {low:g}"
        return f"{'<=' if self.le is not None else '<'} {high:g}"


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, flag: str | bool = False) -> Any:
    """A dataclass field with a default and a range (for a tuple field: of every element);
    `flag`: set by a named flag too (`flagged`)."""
    return field(default=default, metadata={"bounds": Bounds(ge, gt, le, lt),
                                            **_flag(flag)})


def flagged(default: Any, flag: str | bool = True) -> Any:
    """A dataclass field that a named flag sets too: `--<field name>` (`flag=True`) or
    `--<flag>` (dashes for underscores)."""
    return field(default=default, metadata=_flag(flag))


def one_of(table: Mapping[str, Any], default: str, *, flag: str | bool = False) -> Any:
    """A str field whose value names a row of `table` (the table declares the choices)."""
    return field(default=default, metadata={"choices": tuple(table), **_flag(flag)})


def _flag(flag: str | bool) -> dict[str, str | bool]:
    return {"flag": flag} if flag else {}


def _name(hint: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(hint, str(hint))


def _scalar(value: Any, hint: type) -> Any:
    """`value` as a bool, int, float or str, from that type or its text form."""
    text = value.strip().lower() if isinstance(value, str) else None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if text in TRUE_WORDS or text in FALSE_WORDS:
            return text in TRUE_WORDS
        raise Invalid("expected a boolean: true/false, yes/no or 1/0")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(text)  # a TypeError for anything but text
        except (TypeError, ValueError):
            raise Invalid("expected an integer") from None
    if hint is float:
        try:
            number = float(text if text is not None else _number(value))
        except (TypeError, ValueError):
            raise Invalid("expected a number") from None
        if not math.isfinite(number):
            raise Invalid("expected a finite number")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise Invalid("expected a string")
    raise TypeError(f"config_types: no conversion to {hint!r}")  # a field type to add here


def _number(value: Any) -> int | float:
    """An int or float as is; a TypeError for anything else (bools included)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise TypeError(f"not a number: {value!r}")


def convert(value: Any, hint: Any) -> Any:
    """`value` as the type `hint` declares, or Invalid saying what is allowed."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
            if isinstance(value, str) and not isinstance(choice, str) and value == str(choice):
                return choice
        raise Invalid("expected one of " + ", ".join(repr(c) for c in args))
    if origin in (Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "auto")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return convert(value, inner)
        except Invalid as e:
            raise Invalid(f"{e}, or none") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"expected a list of {_name(args[0])}s, e.g. [1, 2, 3]")
        return tuple(convert(v, args[0]) for v in value)
    return _scalar(value, hint)


def check_bounds(value: Any, bounds: Bounds | None) -> None:
    """Invalid if `value` (or an element of a tuple value) is outside `bounds`."""
    if bounds is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if not bounds.allows(v):
            raise Invalid(f"must be {bounds}")


@dataclass(frozen=True)
class Source:
    """Where config values came from: a TOML/JSON file, a --set item, a named flag, or other."""

    kind: Literal["file", "set", "flag", "other"]
    name: str  # the file path, the whole --set item, the flag ("--epochs"), or e.g. "ckpt:config"

    def bad_value(self, dotted: str, value: Any, reason: str) -> ConfigError:
        """`bad.toml: [optim] lr = 'abc': expected a number`, and alike for the other kinds."""
        shown = repr(value) if isinstance(value, str) else value
        if self.kind == "file":
            section, _, key = dotted.rpartition(".")
            return ConfigError(f"{self.name}: {f'[{section}] ' if section else ''}{key} = "
                               f"{shown}: {reason}")
        if self.kind == "set":
            return ConfigError(f"--set {self.name}: {reason}")
        if self.kind == "flag":
            return ConfigError(f"{self.name} {value} ({dotted}): {reason}")
        return ConfigError(f"{self.name}: {dotted} = {shown}: {reason}")

    def unknown_keys(self, section: str, unknown: list[str], valid: list[str]) -> ConfigError:
        """Keys that `section` (dotted, "" at the top) does not have."""
        where = {"file": f"{self.name}: ", "set": f"--set {self.name}: "}.get(
            self.kind, f"{self.name}: ")
        place = f"[{section}] " if section else ""
        return ConfigError(f"{where}{place}unknown key(s) {unknown}; valid keys are {valid}")


def convert_tree(cls: type, values: dict[str, Any], source: Source, prefix: str = "",
                 dropped: frozenset[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """A (partial) nested dict for dataclass `cls`, every value converted to its field's type
    and checked against its bounds; keys in `dropped` ((class name, key)) are left out."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values = {k: v for k, v in values.items() if (cls.__name__, k) not in dropped}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise source.unknown_keys(prefix.rstrip("."), unknown, sorted(known))
    out: dict[str, Any] = {}
    for name, value in values.items():
        hint, dotted = declared_type(known[name], hints[name]), prefix + name
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise source.bad_value(dotted, value, f"expected the [{dotted}] section's keys")
            out[name] = convert_tree(hint, value, source, dotted + ".", dropped)
            continue
        try:
            out[name] = convert(value, hint)
            check_bounds(out[name], known[name].metadata.get("bounds"))
        except Invalid as e:
            raise source.bad_value(dotted, value, str(e)) from None
    return out


def build(cls: type[T], values: dict[str, Any]) -> T:
    """Dataclass `cls` from a dict `convert_tree` returned; what it lacks keeps its default."""
    hints = get_type_hints(cls)
    return cls(**{name: build(hints[name], value) if is_dataclass(hints[name]) else value
                  for name, value in values.items()})


def declared_type(f: Field, hint: Any) -> Any:
    """A field's type: its hint, or Literal[the table's keys] for a `one_of` field."""
    choices = f.metadata.get("choices")
    return Literal[choices] if choices else hint


def _field(cls: type, dotted: str) -> tuple[Field, Any]:
    """The field of dataclass `cls` that a dotted key names, and its declared type."""
    *sections, name = dotted.split(".")
    for section in sections:
        cls = get_type_hints(cls)[section]
    f = {f.name: f for f in fields(cls)}[name]
    return f, declared_type(f, get_type_hints(cls)[name])


def field_type(cls: type, dotted: str) -> Any:
    """The declared type of the field a dotted key names (`optim.lr` -> float)."""
    return _field(cls, dotted)[1]


def choices(cls: type, dotted: str) -> tuple[Any, ...]:
    """The values a choice field (a Literal, or `one_of` a table) may take, in declared order;
    () for any other field."""
    hint = field_type(cls, dotted)
    return get_args(hint) if get_origin(hint) is Literal else ()


def flag_keys(cls: type, prefix: str = "") -> dict[str, str]:
    """Named flag -> the dotted key it sets, for every field of `cls` (nested ones too) declared
    with a flag (`bounded(..., flag=...)`, `flagged`, `one_of(..., flag=...)`)."""
    out: dict[str, str] = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            out.update(flag_keys(hints[f.name], f"{prefix}{f.name}."))
        elif f.metadata.get("flag"):
            flag = f.metadata["flag"]
            out[f.name if flag is True else flag] = prefix + f.name
    return out
