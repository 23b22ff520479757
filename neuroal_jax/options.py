"""Typed options: one frozen dataclass per configurable thing (a top-up's options, a sweep's or a finetune's
settings, a run's data, evaluation and output settings) is the single place for each option's name, type, default,
help text and check. The command line's flags, the API's keywords (or `options={...}` dict) and the report's
entries are all generated from it.

    @dataclass(frozen=True)
    class OWLOptions(Options):
        owl_m: float = option(5.0, "outlier threshold M: a score above M × the mean is an outlier",
                              check=positive, metavar="M")

    OWLOptions.from_dict({"owl_m": 7})      # OWLOptions(owl_m=7.0); unknown keys and bad values are errors
    OWLOptions.add_flags(parser_group)      # --owl-m M  (default 5.0: ...)

The key of an option is its field name; its flag is `--` + the name with dashes. Values are coerced
by the field's annotation: float (finite), int, bool (a flag without value), str, tuple[float | int | str, ...]
(also "0.1,0.2"; an empty list is the default when the default is empty), and `X | None`. `check` functions return
an error text or None. `validate(target)` checks what needs the prune's settings (method, sparsity, structure,
number of calibration windows).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import UsageError

Check = Callable[[Any], "str | None"]


def option(default, help: str, *, check: Check | None = None, choices: tuple | None = None,
           metavar: str | None = None, parse: Callable[[Any], Any] | None = None):
    """A dataclass field that is a top-up option. `parse` turns a given value (a command-line string, or what the
    API got) into the option's value, raising ValueError, for types the annotation cannot say (e.g. "auto" or N)."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "choices": choices,
                                                        "metavar": metavar, "parse": parse})


# ---------------------------------------------------------------- checks

def positive(v) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


def at_least(low) -> Check:
    def check(v):
        values = v if isinstance(v, tuple) else (v,)
        return None if all(x is None or x >= low for x in values) else f"must be >= {low}"
    return check


def in_range(low, high, *, high_open: bool = False) -> Check:
    def check(v):
        values = v if isinstance(v, tuple) else (v,)
        bad = [x for x in values if x is not None and not (low <= x < high if high_open else low <= x <= high)]
        return None if not bad else f"must be in [{low}, {high}{')' if high_open else ']'}"
    return check


def unique(v) -> str | None:
    return None if v is None or len(set(v)) == len(v) else "must not repeat a value"


def all_of(*checks: Check) -> Check:
    def check(v):
        return next((e for e in (c(v) for c in checks) if e), None)
    return check


# ---------------------------------------------------------------- what an option's value may be

@dataclass(frozen=True)
class Target:
    """The prune's settings that an option check may need."""
    method: str
    sparsity: float
    structure: Any  # pruning.Structure
    nsamples: int


def _base_type(annotation):
    """X of an annotation `X` or `X | None`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None))
    return annotation


def comma_list(value) -> list[str]:
    """The one way a list of names is given: "a, b" (a command line) or a sequence; stripped, empties dropped."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def _coerce(kind, value):
    """`value` as `kind`, or raise ValueError with what was expected."""
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        if not math.isfinite(float(value)):
            raise ValueError("must be a finite number")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) and not (hasattr(value, "__index__")):
            raise ValueError("expected an integer")
        return int(value)
    if kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError("expected True or False")
        return bool(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    if typing.get_origin(kind) is tuple:  # tuple[X, ...]: a list, one value, or a comma-separated string
        item = typing.get_args(kind)[0]
        what = {float: "numbers", int: "integers", str: "names"}[item]
        if isinstance(value, str):
            value = comma_list(value)
            try:
                value = [v if item is str else item(v) for v in value]
            except ValueError:
                raise ValueError(f"expected comma-separated {what}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # one value for a list
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"expected a non-empty list of {what}")
        return tuple(_coerce(item, v) for v in value)
    raise TypeError(f"unsupported option type {kind!r}")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


class Options:
    """Base of every top-up's options dataclass (subclasses are frozen dataclasses)."""

    @classmethod
    def option_fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def _types(cls) -> dict:
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, given: Mapping | None, whose: str = "") -> "Options":
        """Options from {key: value}: unknown keys and bad values are ValueErrors naming the key, its flag and
        the valid choices; None means the default. `whose`: what the options belong to, for the messages."""
        given = dict(given or {})
        names = [f.name for f in cls.option_fields()]
        unknown = [k for k in given if k not in names]
        whose = whose or cls.__name__
        if unknown:
            valid = f"valid: {', '.join(names)}" if names else "it takes no options"
            raise UsageError(f"unknown option(s) {', '.join(map(repr, unknown))} for {whose}; {valid}")
        hints, values = cls._types(), {}
        for f in cls.option_fields():
            value = given.get(f.name)
            if value is None or (f.default == () and isinstance(value, (str, list, tuple)) and not comma_list(value)):
                continue  # the default
            kind = _base_type(hints[f.name])
            try:
                value = f.metadata["parse"](value) if f.metadata.get("parse") else _coerce(kind, value)
            except ValueError as e:
                raise UsageError(f"option {f.name} ({flag_of(f.name)}) of {whose}: {e}, got {value!r}") from None
            values[f.name] = value
        options = cls(**values)
        options.check_fields(whose)
        return options

    def check_fields(self, whose: str = "") -> None:
        for f in self.option_fields():
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise UsageError(f"option {f.name} ({flag_of(f.name)}) of {whose or type(self).__name__}: "
                                 f"unknown value {value!r}; valid: {', '.join(map(str, choices))}")
            check = f.metadata.get("check")
            error = check(value) if check else None
            if error:
                raise UsageError(f"option {f.name} ({flag_of(f.name)}) of {whose or type(self).__name__} "
                                 f"{error}, got {value!r}")

    def complete(self, target: Target) -> "Options":
        """A copy with the defaults that depend on the prune's settings filled in. Default: itself."""
        return self

    def validate(self, target: Target) -> None:
        """Checks that need the prune's settings; raise ValueError. Default: none."""

    def resolved(self, target: Target) -> "Options":
        """Defaults filled in for `target` and every check passed: what a run uses and records."""
        done = self.complete(target)
        done.check_fields()
        done.validate(target)
        return done

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ---- command line

    @classmethod
    def add_flags(cls, group, *, only: Sequence[str] | None = None, skip: Sequence[str] = (),
                  required: Sequence[str] = ()) -> None:
        """One flag per option (`only` these, less `skip`); `required` flags must be given."""
        hints = cls._types()
        for f in cls.option_fields():
            if f.name in skip or (only is not None and f.name not in only):
                continue
            kind = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) \
                if isinstance(default, tuple) else default
            quiet_default = default in (None, ()) or kind is bool or f.name in required
            help_text = (f.metadata["help"] + ("" if quiet_default else f" (default: {shown})")).replace("%", "%%")
            if kind is bool:
                group.add_argument(flag_of(f.name), dest=f"option_{f.name}", action="store_const", const=True,
                                   default=None, help=help_text)
                continue
            arg_type = (lambda s: s) if typing.get_origin(kind) is tuple or f.metadata.get("parse") else kind
            group.add_argument(flag_of(f.name), dest=f"option_{f.name}", type=arg_type, default=None,
                               required=f.name in required,
                               metavar=f.metadata.get("metavar") or ("{" + ",".join(f.metadata["choices"]) + "}"
                                                                    if f.metadata.get("choices") else None),
                               help=help_text)

    @classmethod
    def given_in(cls, args: argparse.Namespace) -> dict:
        """{key: raw value} of this class's flags that were given on the command line."""
        return {f.name: getattr(args, f"option_{f.name}") for f in cls.option_fields()
                if getattr(args, f"option_{f.name}", None) is not None}


@dataclass(frozen=True)
class NoOptions(Options):
    """A top-up without options."""
