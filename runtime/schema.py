"""Typed config from YAML: a tree of frozen dataclasses is the schema, checked key by key.

The runtime's own config, a bundle's config and each function's settings are all built here, so
every one of them refuses the same mistakes with the same words: an unknown key, a wrong type,
a value out of range or a broken relation between two keys stops the runtime with the key's
dotted path and what was expected.

A schema is a dataclass whose fields carry type hints, and defaults where a key is optional::

    @dataclass(frozen=True)
    class HealthSettings:
        cache_s: Annotated[float, Range(0, 60)] = 0.5
        mode: Literal["fast", "full"] = "fast"
        token: Annotated[str, Secret()] = ""

        def validate(self) -> None:      # optional: relations between keys
            if self.mode == "full" and not self.cache_s:
                raise Invalid("cache_s", "above 0 when mode is full")

Supported types: ``bool``, ``int``, ``float``, ``str``, ``Decimal``, ``Literal[...]``,
``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses. ``Annotated``
constraints (:class:`Range`, :class:`AtLeast`, :class:`Above`, :class:`Check`) bound a value;
:class:`Secret` marks one that must not sit in a world-readable file nor be shown.

Values from the environment arrive as text (:class:`EnvText`) and are parsed as a YAML scalar
only where the schema wants a number or a flag, so a password such as ``0123`` stays text.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from runtime.errors import ConfigError


class Invalid(ValueError):
    """Raised by a schema's ``validate()``: ``key`` (relative to the dataclass) is wrong."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key}: expected {expected}")
        self.key = key
        self.expected = expected


@dataclass(frozen=True)
class Range:
    """``low <= value <= high``."""

    low: float | int | Decimal
    high: float | int | Decimal
    why: str = ""

    def refuses(self, value: Any) -> str | None:
        ok = self.low <= value <= self.high
        return None if ok else _with_why(f"{self.low} to {self.high}", self.why)


@dataclass(frozen=True)
class AtLeast:
    """``value >= low``."""

    low: float | int | Decimal
    why: str = ""

    def refuses(self, value: Any) -> str | None:
        return None if value >= self.low else _with_why(f"at least {self.low}", self.why)


@dataclass(frozen=True)
class Above:
    """``value > low`` (and, with ``below``, ``value < below``)."""

    low: float | int | Decimal
    below: float | int | Decimal | None = None
    why: str = ""

    def refuses(self, value: Any) -> str | None:
        if value > self.low and (self.below is None or value < self.below):
            return None
        text = f"> {self.low}" if self.below is None else f"> {self.low} and below {self.below}"
        return _with_why(text, self.why)


@dataclass(frozen=True)
class Check:
    """``accepts(value)`` is true; ``expected`` says what a good value looks like."""

    accepts: Callable[[Any], bool]
    expected: str

    def refuses(self, value: Any) -> str | None:
        return None if self.accepts(value) else self.expected


@dataclass(frozen=True)
class Secret:
    """A password or token: refused in a world-readable file, masked wherever values are shown."""

    def refuses(self, value: Any) -> str | None:
        return None


_Constraint = Range | AtLeast | Above | Check | Secret


def _with_why(text: str, why: str) -> str:
    return f"{text} ({why})" if why else text


class EnvText(str):
    """A value from the environment: text until the schema says which type it must be."""


@dataclass(frozen=True)
class Leaf:
    """One key of a schema, for listings: its dotted path, its type and its default."""

    path: str
    type: str
    default: Any
    secret: bool


def build(schema: type, raw: Any, path: str = "") -> Any:
    """Turn ``raw`` (parsed YAML) into an instance of the dataclass ``schema``.

    Raises:
        ConfigError: naming the dotted ``path`` of the first wrong key and what was expected.
    """
    return _build_dataclass(schema, raw, path)


def parse_scalar(text: str) -> Any:
    """Text from the environment as YAML reads a scalar (``3`` an int, ``false`` a bool)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict | list) or value is None else value


def field_names(schema: type) -> list[str]:
    """The keys a dataclass schema accepts, in declaration order."""
    return [f.name for f in dataclasses.fields(schema)]


def leaves(schema: type, prefix: str = "") -> Iterator[Leaf]:
    """Every scalar key of ``schema``, depth first, with its default (``MISSING`` if none)."""
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        kind, constraints = _unwrap(hints[f.name])
        path = _join(prefix, f.name)
        default = _default_of(f)
        if dataclasses.is_dataclass(kind):
            yield from leaves(kind, path)  # type: ignore[arg-type]
            continue
        secret = any(isinstance(c, Secret) for c in constraints)
        yield Leaf(path, _type_text(kind), default, secret)


def secret_paths(schema: type, value: Any, prefix: str = "") -> Iterator[str]:
    """The dotted paths of every :class:`Secret` key set (not empty) in a built ``value``."""
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        kind, constraints = _unwrap(hints[f.name])
        path = _join(prefix, f.name)
        item = getattr(value, f.name)
        if any(isinstance(c, Secret) for c in constraints):
            if item:
                yield path
        elif dataclasses.is_dataclass(kind):
            yield from secret_paths(kind, item, path)  # type: ignore[arg-type]
        elif typing.get_origin(kind) is dict and isinstance(item, Mapping):
            value_kind, _ = _unwrap(typing.get_args(kind)[1])
            if dataclasses.is_dataclass(value_kind):
                for key, member in item.items():
                    yield from secret_paths(value_kind, member, _join(path, key))  # type: ignore[arg-type]


def has_path(schema: type, path: str) -> bool:
    """Whether the dotted ``path`` names a key of ``schema`` (any key below a ``dict``)."""
    kind: Any = schema
    for key in path.split("."):
        if dataclasses.is_dataclass(kind):
            hints = typing.get_type_hints(kind, include_extras=True)
            if key not in hints or key not in field_names(kind):  # type: ignore[arg-type]
                return False
            kind, _ = _unwrap(hints[key])
        elif typing.get_origin(kind) is dict:
            kind, _ = _unwrap(typing.get_args(kind)[1])
        else:
            return False
    return True


def as_raw(value: Any) -> Any:
    """A built value back as plain YAML data (dataclasses as mappings, Decimals as text)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_raw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: as_raw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [as_raw(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def check_schema(schema: Any, where: str) -> None:
    """Refuse a schema the builder cannot fill: not a dataclass, or a type it does not know.

    Raises:
        ConfigError: naming ``where`` (the manifest entry that named the schema).
    """
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise ConfigError(f"{where}: must name a dataclass, found {_describe(schema)}")
    try:
        hints = typing.get_type_hints(schema, include_extras=True)
    except Exception as exc:
        raise ConfigError(
            f"{where}: cannot read the type hints of {schema.__name__}: {exc}"
        ) from None
    for f in dataclasses.fields(schema):
        problem = _unsupported(hints[f.name])
        if problem:
            raise ConfigError(f"{where}: {schema.__name__}.{f.name}: {problem}")


def _unsupported(hint: Any) -> str | None:
    kind, constraints = _unwrap(hint)
    for constraint in constraints:
        if not isinstance(constraint, _Constraint):
            return f"unknown constraint {constraint!r} in Annotated"
    if kind in _SCALARS or typing.get_origin(kind) is typing.Literal:
        return None
    if dataclasses.is_dataclass(kind):
        for f in dataclasses.fields(kind):
            problem = _unsupported(typing.get_type_hints(kind, include_extras=True)[f.name])
            if problem:
                return f"{kind.__name__}.{f.name}: {problem}"  # type: ignore[union-attr]
        return None
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _unsupported(rest[0])
        return "only 'X | None' unions are supported"
    if origin is dict and args and args[0] is str:
        return _unsupported(args[1])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _unsupported(args[0])
    return f"type {kind!r} is not supported (use bool, int, float, str, Decimal, Literal, ...)"


# --- building ---------------------------------------------------------------------------------

_SCALARS = (bool, int, float, str, Decimal)


def _build_dataclass(schema: type, raw: Any, path: str) -> Any:
    if isinstance(raw, EnvText) or not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, found {_describe(raw)}")
    hints = typing.get_type_hints(schema, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(path, str(unknown[0]))}: unknown key; expected one of "
            f"{', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in raw:
            default = _default_of(f)
            item = raw[name]
            if default is not dataclasses.MISSING and isinstance(item, Mapping):
                item = _merged(as_raw(default), item)  # keys left out keep their defaults
            values[name] = _coerce(hints[name], item, key_path)
        elif _default_of(f) is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: required but missing")
    try:
        built = schema(**values)
    except Invalid as exc:
        raise ConfigError(f"{_join(path, exc.key)}: expected {exc.expected}") from None
    validate = getattr(built, "validate", None)
    if callable(validate):
        try:
            validate()
        except Invalid as exc:
            raise ConfigError(f"{_join(path, exc.key)}: expected {exc.expected}") from None
    return built


def _merged(base: Any, over: Mapping[str, Any]) -> Any:
    if not isinstance(base, dict):
        return over
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce(hint: Any, value: Any, path: str) -> Any:
    kind, constraints = _unwrap(hint)
    coerced = _coerce_kind(kind, value, path)
    for constraint in constraints:
        problem = constraint.refuses(coerced)
        if problem:
            raise ConfigError(f"{path}: expected {problem}, found {_shown(coerced, constraints)}")
    return coerced


def _coerce_kind(kind: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(kind)
    if isinstance(value, EnvText) and kind is not str and kind is not Decimal:
        # A secret like "0123" stays text; a number or a flag is parsed as YAML would.
        literal_text = origin is typing.Literal and all(
            isinstance(choice, str) for choice in typing.get_args(kind)
        )
        if not literal_text:
            value = parse_scalar(value)
    if isinstance(value, EnvText):
        value = str(value)
    if dataclasses.is_dataclass(kind):
        return _build_dataclass(kind, value, path)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        return _coerce(inner, value, path)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if any(value == choice and type(value) is type(choice) for choice in choices):
            return value
        shown = ", ".join(str(choice) for choice in choices)
        raise ConfigError(f"{path}: expected one of {shown}, found {value!r}")
    if origin is dict:
        _, value_kind = typing.get_args(kind)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, found {_describe(value)}")
        return {
            str(key): _coerce(value_kind, item, _join(path, str(key)))
            for key, item in value.items()
        }
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, found {_describe(value)}")
        return tuple(_coerce(item_kind, item, f"{path}[{i}]") for i, item in enumerate(value))
    return _coerce_scalar(kind, value, path)


def _coerce_scalar(kind: Any, value: Any, path: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, found {_describe(value)}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected a whole number, found {_describe(value)}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, found {_describe(value)}")
    if kind is Decimal:
        try:
            parsed = Decimal(str(value)) if isinstance(value, int | float | str) else None
        except InvalidOperation:
            parsed = None
        if isinstance(value, bool) or parsed is None or not parsed.is_finite():
            raise ConfigError(f"{path}: expected a decimal number, found {_describe(value)}")
        return parsed
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, found {_describe(value)}")
    raise ConfigError(f"{path}: the schema has a type the loader does not know: {kind!r}")


def _unwrap(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[X, c1, c2]`` as ``(X, (c1, c2))``; any other hint as ``(hint, ())``."""
    if typing.get_origin(hint) is typing.Annotated:
        kind, *constraints = typing.get_args(hint)
        return kind, tuple(constraints)
    return hint, ()


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _type_text(kind: Any) -> str:
    if kind in _SCALARS:
        return kind.__name__
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return " | ".join(repr(c) for c in typing.get_args(kind))
    return str(kind).replace("typing.", "").replace("decimal.", "")


def _shown(value: Any, constraints: tuple[Any, ...]) -> str:
    if any(isinstance(c, Secret) for c in constraints):
        return "(secret)"
    return repr(value) if isinstance(value, str) else str(value)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
