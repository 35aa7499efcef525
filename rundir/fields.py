"""A YAML value checked against a dataclass field: the walk every config load makes, and its errors.

`build(cls, data, path)` makes a dataclass from a mapping, field by field
(`convert`, which recurses into nested dataclasses), rejects unknown keys with
the closest valid one (`did_you_mean`) and runs the section's `check(path)`.
Every failure is a `ConfigError` naming the dotted key. Knows nothing of LFME's
sections (`rundir.sections`) or of how a config file is loaded (`rundir.config`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def convert(value: Any, annotation: Any, path: str) -> Any:
    """Check `value` against a field annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(value, inner, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {describe(value)}")
        return [convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return build(annotation, value, path)
    if annotation is dict:  # a free-form mapping: its section's check() validates the content
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {describe(value)}")
        return copy.deepcopy(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {describe(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {describe(value)}")
        return value
    raise TypeError(f"config field {path} has an unsupported annotation {annotation!r}")


def build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {describe(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown key '{join_key(path, key)}' ({did_you_mean(str(key), names, path, where)})")
    values = {key: convert(data[key], hints[key], join_key(path, key)) for key in data}
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def did_you_mean(key: str, names: list[str], path: str, where: str) -> str:
    """The valid key a misspelt one is closest to, else every valid key of its section."""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{join_key(path, close[0])}'?"
    return f"valid keys of {where}: {', '.join(names)}"


def join_key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
