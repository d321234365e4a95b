"""The foundation of every config model: the strict base class, shared field types, the naming
rules, the per-kind (discriminated union) helper and the YAML loader.

A wrong file fails at load time with one line naming the file, the path to the field and the
reason::

    raymlp.errors.ConfigError: configs/platform.yaml: storage.root: unsupported URI scheme
      'ftp' in 'ftp://x' (rule: a local path, file://, s3://, gs:// or az://)
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    PlainSerializer,
    Tag,
    TypeAdapter,
)
from pydantic import ValidationError as PydanticValidationError

from raymlp.errors import ConfigError

__all__ = [
    "StrictModel",
    "KindModel",
    "kind_union",
    "Duration",
    "parse_duration",
    "format_duration",
    "hash_api_key",
    "NAME_RE",
    "MODEL_NAME_RE",
    "ALIAS_RE",
    "IMPORT_PATH_RE",
    "full_match",
    "ImportPath",
    "load_yaml",
    "load_config",
    "load_config_file",
    "format_validation_error",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


# ---------------------------------------------------------------------------------------------
# Shared field types
# ---------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"250ms"``, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a duration (rule: like '30d', '12h', '90s')")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative (rule: >= 0)")
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise ValueError(
        f"duration {value!r} is not understood (rule: a number and a unit ms|s|m|h|d|w, like '30d')"
    )


def format_duration(td: timedelta) -> str:
    """The shortest exact ``"<n><unit>"`` spelling of a duration."""
    secs = td.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        n = secs / _DURATION_UNITS[unit]
        if n >= 1 and float(n).is_integer():
            return f"{int(n)}{unit}"
    return f"{int(round(secs * 1000))}ms"


#: A duration field: accepts ``"30d"`` etc., serialises back to that spelling.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest stored in platform.yaml instead of the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Naming rules: the one definition (raymlp.registry.names uses these too). Every pattern is
# anchored with ``\A``/``\Z``: ``$`` also matches before a trailing newline, so ``"abc\n"``
# would pass a ``^...$`` pattern under ``re.match``. With ``\Z`` a caller that still uses
# ``.match`` is safe too; checks here use :func:`full_match` (``re.fullmatch``).
# ---------------------------------------------------------------------------------------------

#: Platform names: tenants, principals, Serve applications, output tables, streams.
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_\-]{0,62}\Z")
#: Registered model names (and experiment names): 1-128 chars, '.' allowed.
MODEL_NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_.\-]{0,127}\Z")
#: Registry aliases: start with a letter, so an alias never reads as a version number.
ALIAS_RE = re.compile(r"\A[a-z][a-z0-9_\-]{0,62}\Z")

_NAME_RE = NAME_RE

#: The format of an import path written in a config: ``package.module:attr`` (resolved later by
#: ``raymlp._private.importing.resolve_import_path``, never at load time).
IMPORT_PATH_RE = re.compile(r"\A[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


def full_match(pattern: re.Pattern[str], value: object) -> bool:
    """Whether ``value`` is a string that ``pattern`` matches as a whole (never a prefix, never
    with a trailing newline)."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _check_import_path(value: str) -> str:
    if not full_match(IMPORT_PATH_RE, value):
        raise ValueError(f"{value!r} is not an import path (rule: 'package.module:name')")
    return value


#: A string field holding an import path ``package.module:name`` (format checked, not imported).
ImportPath = Annotated[str, AfterValidator(_check_import_path)]


def _check_name(value: str, what: str) -> str:
    if not full_match(NAME_RE, value):
        raise ValueError(
            f"{what} {value!r} is not a valid name "
            "(rule: 1-63 chars of a-z, 0-9, '_' or '-', starting with a letter or digit)"
        )
    return value


# ---------------------------------------------------------------------------------------------
# Configs that come in kinds (discriminated unions)
# ---------------------------------------------------------------------------------------------

#: Tags of every kind union, as pydantic puts them in error locations ("kind=delta"); the loader
#: drops them so a message keeps the user's own path (``source.path``, not
#: ``source.kind=delta.path``).
_UNION_TAGS: set[str] = set()


class KindModel(StrictModel):
    """Base of a config with one model per ``kind`` (set up by :func:`kind_union`).

    The base holds the fields every kind shares; each kind is a subclass with its own fields and
    ``kind: Literal[...]``, so a key that does not belong to the kind is an unknown-key error.
    Calling the base (``StreamSourceConfig(path=...)``) or its ``model_validate`` builds the
    subclass the data's kind names (the default kind when it names none).
    """

    _kinds: ClassVar[dict[str, type[KindModel]] | None] = None
    _kind_field: ClassVar[str] = "kind"
    _default_kind: ClassVar[str | None] = None
    _union: ClassVar[Any] = None

    def __new__(cls, *args: Any, **data: Any) -> Any:
        if cls.__dict__.get("_kinds"):
            cls = cls._variant(data)
        return super().__new__(cls)

    @classmethod
    def _variant(cls, data: Any) -> type[KindModel]:
        kinds = cls.__dict__["_kinds"]
        tag = _kind_of(data, cls._kind_field, cls._default_kind)
        if tag not in kinds:
            # Let the union report the bad kind the same way the loader does.
            TypeAdapter(cls._union).validate_python(data)
        return kinds[tag]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if cls.__dict__.get("_kinds"):
            return TypeAdapter(cls._union).validate_python(obj, **kwargs)
        return super().model_validate(obj, **kwargs)


def _kind_of(value: Any, field: str, default: str | None) -> Any:
    if isinstance(value, dict):
        return value.get(field, default)
    return getattr(value, field, default)


def kind_union(
    base: type[KindModel],
    variants: dict[str, type[KindModel]],
    *,
    field: str = "kind",
    default: str | None = None,
) -> Any:
    """The field type ``Annotated[Union[...], Discriminator]`` of ``base``'s kinds.

    ``default`` is the kind of data that names none (today's default value of the field).
    Also makes calling ``base(...)`` build the right kind.
    """

    def tag_of(value: Any) -> str | None:
        kind = _kind_of(value, field, default)
        return None if kind is None else f"{field}={kind}"

    for kind in variants:
        _UNION_TAGS.add(f"{field}={kind}")
    members = tuple(Annotated[cls, Tag(f"{field}={kind}")] for kind, cls in variants.items())
    # Built at runtime from the variants: a value (typed Any), not a static type alias.
    union: Any = Annotated[Union[members], Discriminator(tag_of)]  # noqa: UP007
    base._kinds = dict(variants)
    base._kind_field = field
    base._default_kind = default
    base._union = union
    return union


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _user_loc(loc: tuple[Any, ...]) -> list[Any]:
    return [p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS)]


def format_validation_error(err: PydanticValidationError, source: str) -> ConfigError:
    """One-line ConfigError naming the file, the dotted path of the first bad field and why."""
    first = err.errors(include_url=False)[0]
    loc = _user_loc(first["loc"])
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        ctx = first.get("ctx") or {}
        key, _, bad = str(ctx.get("tag", "")).partition("=")
        key = key or "kind"
        kinds = [
            t.partition("=")[2] for t in re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        ]
        loc = [*loc, key]
        msg = f"{key} {bad!r} is not a known {key} (rule: one of {', '.join(kinds)})"
    elif first["type"] == "extra_forbidden":
        tags = [t for t in first["loc"] if isinstance(t, str) and t in _UNION_TAGS]
        of_kind = ""
        if tags:
            key, _, kind = tags[-1].partition("=")
            of_kind = f" for {key} {kind!r}"
        msg = f"unknown key {first['loc'][-1]!r}{of_kind} (rule: only documented keys are allowed)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif "input" in first and not isinstance(first["input"], (dict, list)) and "got" not in msg:
        if repr(first["input"]) not in msg:
            msg = f"{msg} (got {first['input']!r})"
    field = ".".join(str(p) for p in loc) or "<root>"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{source}: {field}: {msg}{suffix}", file=source, field=field, reason=msg)


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file, turning any read/parse problem into a one-line ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found", file=source, reason="not found") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror}", file=source) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"{source}: {where}: invalid YAML: {problem}", file=source, field=where, reason=problem
        ) from None


def load_config(model: type[M], data: Any, source: str = "<config>") -> M:
    """Validate already-parsed data (dict) into ``model``; errors name ``source`` and the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: <root>: expected a mapping, got {type(data).__name__}",
            file=source,
            field="<root>",
        )
    try:
        return model.model_validate(data)
    except PydanticValidationError as e:
        raise format_validation_error(e, source) from None


def load_config_file(model: type[M], path: str | os.PathLike[str]) -> M:
    """Load a YAML file into ``model``."""
    return load_config(model, load_yaml(path), str(path))
