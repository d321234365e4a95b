"""Model signatures: the input features (name, dtype) and the output a model version serves.

A signature is validated when a version is registered, stored with it (and as
``signature.json`` beside the artifact), and used by Serve to check every request::

    >>> sig = Signature.model_validate({
    ...     "inputs": [{"name": "tenure_months", "dtype": "int64"},
    ...                {"name": "monthly_charges", "dtype": "float64"}],
    ...     "output": {"name": "churn", "kind": "binary", "labels": ["stay", "churn"]},
    ... })
    >>> validate_request(sig, {"tenure_months": 24, "monthly_charges": 89.99})
    {'tenure_months': 24, 'monthly_charges': 89.99}
    >>> validate_request(sig, {"tenure_months": "24", "monthly_charges": 1.0})
    Traceback (most recent call last):
    raymlp.errors.ValidationError: feature 'tenure_months' must be int64, got str '24' ...
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from raymlp.errors import ValidationError

__all__ = [
    "DTYPES",
    "FeatureSpec",
    "OutputSpec",
    "Signature",
    "parse_signature",
    "validate_request",
]

#: dtypes a signature input may declare, with the inclusive range of the integer ones.
_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOATS = ("float32", "float64")
DTYPES = (*_INT_RANGES, *_FLOATS, "bool", "string", "timestamp")

_FEATURE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Model):
    """One input feature."""

    name: str = Field(description="Feature name as sent in requests.")
    dtype: str = Field(description=f"One of {', '.join(DTYPES)}.")
    nullable: bool = Field(False, description="Whether null (None) is accepted.")
    description: str = Field("", description="Free text.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FEATURE_RE.match(v):
            raise ValueError(
                f"feature name {v!r} is not valid (rule: a letter or '_' then letters, digits, "
                "'_', '.', ':' or '-')"
            )
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"dtype {v!r} is not supported (rule: one of {', '.join(DTYPES)})")
        return v


class OutputSpec(_Model):
    """What the model predicts."""

    name: str = Field(description="Name of the prediction (e.g. 'churn').")
    kind: Literal["binary", "regression", "multiclass"] = Field(description="Prediction kind.")
    labels: list[str] | None = Field(
        None, description="Class labels: 2 for binary (optional), >= 2 for multiclass (required)."
    )

    @model_validator(mode="after")
    def _labels(self) -> OutputSpec:
        labels = self.labels
        if self.kind == "regression" and labels:
            raise ValueError(f"labels {labels!r} given for a regression output (rule: none)")
        if self.kind == "multiclass" and (not labels or len(labels) < 2):
            raise ValueError(f"multiclass output needs >= 2 labels (got {labels!r})")
        if self.kind == "binary" and labels is not None and len(labels) != 2:
            raise ValueError(f"binary output takes exactly 2 labels (got {labels!r})")
        if labels and len(set(labels)) != len(labels):
            raise ValueError(f"labels {labels!r} repeat (rule: unique)")
        return self


class Signature(_Model):
    """Inputs and output of a model version."""

    inputs: list[FeatureSpec] = Field(min_length=1, description="Input features, in order.")
    output: OutputSpec = Field(description="The prediction.")

    @field_validator("inputs")
    @classmethod
    def _unique(cls, inputs: list[FeatureSpec]) -> list[FeatureSpec]:
        seen: set[str] = set()
        for i, f in enumerate(inputs):
            if f.name in seen:
                raise ValueError(f"inputs[{i}].name {f.name!r} repeats (rule: unique names)")
            seen.add(f.name)
        return inputs

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.inputs]


def parse_signature(data: Signature | dict[str, Any]) -> Signature:
    """A :class:`Signature` from a dict; ValidationError naming the bad field otherwise."""
    if isinstance(data, Signature):
        return data
    if not isinstance(data, dict):
        raise ValidationError(
            f"signature must be a mapping with 'inputs' and 'output', got {type(data).__name__}",
            field="signature",
            rule="mapping",
        )
    try:
        return Signature.model_validate(data)
    except PydanticValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = f"signature.{loc}" if loc else "signature"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = f"unknown key {first['loc'][-1]!r} (rule: only documented keys)"
        elif first["type"] == "missing":
            msg = "required field is missing"
        raise ValidationError(
            f"{field}: {msg}", field=field, rule=first["type"], value=_short(first.get("input"))
        ) from None


def _short(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return None
    return value


def _type_error(name: str, dtype: str, value: Any) -> ValidationError:
    return ValidationError(
        f"feature {name!r} must be {dtype}, got {type(value).__name__} {value!r}",
        field=name,
        value=repr(value)[:80],
        rule=dtype,
    )


def _coerce(name: str, dtype: str, value: Any) -> Any:
    if dtype in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON clients send 24.0 for 24
            else:
                raise _type_error(name, dtype, value)
        lo, hi = _INT_RANGES[dtype]
        if not lo <= int(value) <= hi:
            raise ValidationError(
                f"feature {name!r} value {value} is out of range for {dtype} (rule: {lo}..{hi})",
                field=name,
                value=int(value),
                rule=f"{dtype} range",
            )
        return int(value)
    if dtype in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _type_error(name, dtype, value)
        try:
            out = float(value)
        except OverflowError:  # an int beyond float64, e.g. a 400-digit JSON number
            out = -math.inf if isinstance(value, int) and value < 0 else math.inf
        if math.isinf(out):
            raise ValidationError(
                f"feature {name!r} is {out} (rule: a finite number)",
                field=name,
                value=repr(out),
                rule="finite",
            )
        return out
    if dtype == "bool":
        if not isinstance(value, bool):
            raise _type_error(name, dtype, value)
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise _type_error(name, dtype, value)
        return value
    # timestamp: a datetime or an ISO-8601 string
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise _type_error(name, "timestamp (ISO-8601)", value)


def validate_request(signature: Signature | dict[str, Any], features: Any) -> dict[str, Any]:
    """Check one request's features against a signature; returns them coerced, in input order.

    Raises ValidationError naming the offending field: a missing feature, one of the wrong type
    or out of range, or an unknown extra one.
    """
    sig = parse_signature(signature)
    if not isinstance(features, dict):
        raise ValidationError(
            f"features must be an object of name -> value, got {type(features).__name__}",
            field="features",
            rule="object",
        )
    known = {f.name for f in sig.inputs}
    for key in features:
        if key not in known:
            raise ValidationError(
                f"feature {key!r} is not in the model signature (rule: one of "
                f"{', '.join(sorted(known))})",
                field=str(key),
                rule="known feature",
            )
    out: dict[str, Any] = {}
    for spec in sig.inputs:
        if spec.name not in features:
            raise ValidationError(
                f"feature {spec.name!r} is missing (rule: required by the model signature)",
                field=spec.name,
                rule="required",
            )
        value = features[spec.name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not spec.nullable:
                raise ValidationError(
                    f"feature {spec.name!r} is null (rule: {spec.dtype}, not nullable)",
                    field=spec.name,
                    rule="not null",
                )
            out[spec.name] = None
            continue
        out[spec.name] = _coerce(spec.name, spec.dtype, value)
    return out
