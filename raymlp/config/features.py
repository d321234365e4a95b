"""``configs/features/*.yaml`` (``raymlp features apply FILE``): entities, feature views and
on-demand views, and the same objects in Python.

Names of entities, views and features become Delta column names and ``view__feature`` output
columns, so they are plain identifiers: no leading ``_`` (reserved for internal columns such as
``_seq``) and no ``__`` (the separator of output columns). Names are checked as a full match:
a trailing newline, a control character or one character too many is refused.

``sensitive: true`` on an entity (all its join keys) or on a string feature stores the values
as keyed tokens (``tok_<hmac-sha256 hex>``, see :mod:`raymlp.features.tokenize`): the raw values
never reach the offline (Delta) or online store, and lookups by raw value still work.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from raymlp.config._base import Duration, StrictModel, full_match

__all__ = [
    "FeatureDType",
    "KeyDType",
    "Entity",
    "FeatureField",
    "FeatureView",
    "OnDemandFeatureView",
    "FeatureRepo",
]

#: Value types of features. ``timestamp`` is a UTC timestamp (microseconds).
FeatureDType = Literal["int32", "int64", "float32", "float64", "string", "bool", "timestamp"]
#: Value types of entity join keys.
KeyDType = Literal["string", "int64"]

_FEATURE_OBJECT_RE = re.compile(r"\A[a-z][a-z0-9_]{0,62}\Z")
_COLUMN_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,127}\Z")


def _check_feature_object_name(value: str, what: str) -> str:
    if not full_match(_FEATURE_OBJECT_RE, value) or "__" in value:
        raise ValueError(
            f"{what} name {value!r} is not valid (rule: 1-63 chars of a-z, 0-9, '_', starting "
            "with a letter, no '__')"
        )
    return value


def _check_column_name(value: str, what: str) -> str:
    if not full_match(_COLUMN_RE, value) or "__" in value:
        raise ValueError(
            f"{what} {value!r} is not a valid column name (rule: letters, digits and '_', "
            "starting with a letter, no '__')"
        )
    return value


class Entity(StrictModel):
    """A thing features describe (a customer, a card), identified by its join key(s).

    Example::

        Entity(name="customer", join_keys=["customer_id"])
        Entity(name="card", join_keys=["card_number"], sensitive=True)  # stored as tokens
    """

    name: str = Field(description="Unique entity name.")
    join_keys: list[str] = Field(
        min_length=1, description="Columns that identify one entity (usually one)."
    )
    value_type: KeyDType = Field(
        "string", description="Type of every join key column: string or int64."
    )
    sensitive: bool = Field(
        False,
        description=(
            "Store the join keys as keyed tokens (HMAC-SHA256), never raw; lookups by raw value "
            "still work. Needs value_type string."
        ),
    )
    description: str = Field("", description="Free text.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_feature_object_name(v, "entity")

    @model_validator(mode="after")
    def _sensitive_type(self) -> Entity:
        if self.sensitive and self.value_type != "string":
            raise ValueError(
                f"entity {self.name!r} is sensitive with value_type {self.value_type!r} "
                "(rule: sensitive join keys are strings, since they are stored as tokens)"
            )
        return self

    @field_validator("join_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            _check_column_name(k, "join key")
        if len(set(v)) != len(v):
            raise ValueError(f"join_keys {v!r} repeat (rule: unique)")
        return v


class FeatureField(StrictModel):
    """One typed column of a feature view (or of an on-demand view's request data)."""

    name: str = Field(description="Column name.")
    dtype: FeatureDType = Field(
        description="int32, int64, float32, float64, string, bool or timestamp (UTC)."
    )
    sensitive: bool = Field(
        False,
        description=(
            "Store the values as keyed tokens (HMAC-SHA256), never raw (dtype string only; "
            "feature views only)."
        ),
    )
    description: str = Field("", description="Free text.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_column_name(v, "feature")

    @model_validator(mode="after")
    def _sensitive_type(self) -> FeatureField:
        if self.sensitive and self.dtype != "string":
            raise ValueError(
                f"feature {self.name!r} is sensitive with dtype {self.dtype!r} (rule: sensitive "
                "features are strings, since they are stored as tokens)"
            )
        return self


def _unique_fields(fields: list[FeatureField], where: str) -> None:
    names = [f.name for f in fields]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where} names {dupes!r} more than once (rule: unique feature names)")


class FeatureView(StrictModel):
    """Features of one or more entities, stored in one Delta table ``<root>/features/<name>``.

    ``ttl`` bounds how old a value may be: historical retrieval only matches rows with
    ``entity_ts - ttl < feature_ts <= entity_ts`` and online reads report ``expired`` for values
    older than ``ttl``. ``0`` means values never expire.

    Example (YAML)::

        name: customer_profile
        entities: [customer]
        ttl: 30d
        schema:
          - {name: tenure_months, dtype: int64}
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, validate_by_alias=True
    )

    name: str = Field(description="Unique view name (also the Delta table's directory).")
    entities: list[str] = Field(min_length=1, description="Names of the entities it describes.")
    timestamp_field: str = Field(
        "event_timestamp", description="Column holding each row's event time (timezone-aware)."
    )
    ttl: Duration = Field(
        timedelta(0), description="How long a value stays valid, e.g. '30d' (0: forever)."
    )
    online: bool = Field(True, description="Whether the view is served from the online store.")
    features: list[FeatureField] = Field(
        alias="schema", min_length=1, description="The feature columns (YAML key: schema)."
    )
    description: str = Field("", description="Free text.")
    owner: str = Field("", description="Who answers for this view (team or e-mail).")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_feature_object_name(v, "feature view")

    @field_validator("timestamp_field")
    @classmethod
    def _ts(cls, v: str) -> str:
        return _check_column_name(v, "timestamp_field")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: timedelta) -> timedelta:
        if v < timedelta(0):
            raise ValueError(f"ttl {v!r} is negative (rule: >= 0; 0 means no expiry)")
        return v

    @model_validator(mode="after")
    def _columns(self) -> FeatureView:
        _unique_fields(self.features, f"feature view {self.name!r}")
        if len(set(self.entities)) != len(self.entities):
            raise ValueError(f"entities {self.entities!r} repeat (rule: unique)")
        clash = [f.name for f in self.features if f.name == self.timestamp_field]
        if clash:
            raise ValueError(
                f"feature {clash[0]!r} is also the timestamp_field (rule: distinct columns)"
            )
        return self


class OnDemandFeatureView(StrictModel):
    """Features computed at request time by a Python function, identically online and offline.

    The function (``udf``, an import path ``module:function``) receives a ``dict`` of numpy arrays:
    one per source feature, named ``view__feature``, and one per request field; it returns a
    ``dict`` with one array per declared output feature.

    Example (YAML)::

        name: customer_ratios
        sources: [customer_profile:monthly_charges, customer_profile:tenure_months]
        udf: raymlp.features.examples:charges_per_tenure
        schema:
          - {name: charges_per_tenure, dtype: float64}
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, validate_by_alias=True
    )

    name: str = Field(description="Unique name among feature views and on-demand views.")
    sources: list[str] = Field(min_length=1, description="Input feature references 'view:feature'.")
    request_schema: list[FeatureField] = Field(
        default_factory=list, description="Inputs supplied with each request / entity row."
    )
    udf: str = Field(description="Import path of the function, 'package.module:function'.")
    features: list[FeatureField] = Field(
        alias="schema", min_length=1, description="The output features (YAML key: schema)."
    )
    description: str = Field("", description="Free text.")
    owner: str = Field("", description="Who answers for it.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_feature_object_name(v, "on-demand feature view")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        for ref in v:
            view, sep, feat = ref.partition(":")
            if not sep or not view or not feat:
                raise ValueError(
                    f"source {ref!r} is not a feature reference (rule: 'view:feature')"
                )
        return v

    @field_validator("udf")
    @classmethod
    def _udf(cls, v: str) -> str:
        mod, sep, fn = v.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", mod) or not fn.isidentifier():
            raise ValueError(f"udf {v!r} is not an import path (rule: 'package.module:function')")
        return v

    @model_validator(mode="after")
    def _columns(self) -> OnDemandFeatureView:
        _unique_fields(self.features, f"on-demand view {self.name!r}")
        _unique_fields(self.request_schema, f"request_schema of {self.name!r}")
        marked = [f.name for f in [*self.features, *self.request_schema] if f.sensitive]
        if marked:
            raise ValueError(
                f"on-demand view {self.name!r} marks {marked!r} sensitive (rule: only stored "
                "features and join keys are tokenized; an on-demand view stores nothing)"
            )
        return self


class FeatureRepo(StrictModel):
    """A feature definition file: entities, feature views and on-demand views.

    Load one with ``load_config_file(FeatureRepo, "configs/features/churn.yaml")``.
    """

    entities: list[Entity] = Field(default_factory=list, description="Entities.")
    feature_views: list[FeatureView] = Field(default_factory=list, description="Feature views.")
    on_demand_feature_views: list[OnDemandFeatureView] = Field(
        default_factory=list, description="On-demand (request-time) feature views."
    )

    @model_validator(mode="after")
    def _unique(self) -> FeatureRepo:
        ents = [e.name for e in self.entities]
        if len(set(ents)) != len(ents):
            raise ValueError(f"entity names {ents!r} repeat (rule: unique)")
        views = [v.name for v in self.feature_views] + [
            v.name for v in self.on_demand_feature_views
        ]
        dupes = sorted({n for n in views if views.count(n) > 1})
        if dupes:
            raise ValueError(
                f"view names {dupes!r} repeat (rule: unique across feature_views and "
                "on_demand_feature_views)"
            )
        return self
