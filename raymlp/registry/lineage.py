"""Lineage of a model version: the run, the feature views at their Delta table versions, the
dataset size, the code commit, the parent model and the fallback model.

:class:`Lineage` is what ``register(..., lineage=...)`` takes; :class:`LineageIndex` answers the
reverse questions (which versions were trained on a feature view, which were fine-tuned from a
version, which serve with it as fallback)::

    >>> lin = parse_lineage({"feature_views": [{"name": "customer_profile", "version": 7}],
    ...                      "dataset_rows": 10000, "code_commit": "3f2a9c1"})
    >>> lin.feature_views[0].version
    7
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from raymlp.errors import ValidationError

__all__ = ["FeatureViewRef", "ModelRef", "Lineage", "parse_lineage", "LineageIndex"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureViewRef(_Model):
    """A feature view and the Delta table version a training set was read at."""

    name: str = Field(min_length=1, description="Feature view name.")
    version: int | None = Field(None, ge=0, description="Delta table version read.")
    features: list[str] = Field(default_factory=list, description="Features used from it.")


class ModelRef(_Model):
    """Another registered model version (or alias, for fallbacks that follow an alias)."""

    name: str = Field(min_length=1, description="Registered model name.")
    version: int | None = Field(None, ge=1, description="Version number.")
    alias: str | None = Field(None, description="Alias, instead of a fixed version.")

    @model_validator(mode="after")
    def _one(self) -> ModelRef:
        if (self.version is None) == (self.alias is None):
            raise ValueError(
                f"model reference {self.name!r} needs exactly one of version or alias "
                f"(got version={self.version!r}, alias={self.alias!r})"
            )
        return self


class Lineage(_Model):
    """Where a model version comes from."""

    run_id: str | None = Field(None, description="Training run (experiment tracking).")
    feature_views: list[FeatureViewRef] = Field(
        default_factory=list, description="Feature views and their table versions."
    )
    dataset_rows: int | None = Field(None, ge=0, description="Rows of the training dataset.")
    dataset_uri: str | None = Field(None, description="Where the training dataset came from.")
    code_commit: str | None = Field(None, description="Git commit of the training code.")
    parent_model: ModelRef | None = Field(
        None, description="Model this one was fine-tuned or distilled from."
    )
    fallback_model: ModelRef | None = Field(
        None, description="Model Serve falls back to when this one cannot answer."
    )


def parse_lineage(data: Lineage | dict[str, Any] | None) -> Lineage:
    """A :class:`Lineage` from a dict (None: empty); ValidationError naming the bad field."""
    if data is None:
        return Lineage()
    if isinstance(data, Lineage):
        return data
    if not isinstance(data, dict):
        raise ValidationError(
            f"lineage must be a mapping, got {type(data).__name__}",
            field="lineage",
            rule="mapping",
        )
    try:
        return Lineage.model_validate(data)
    except PydanticValidationError as e:
        first = e.errors(include_url=False)[0]
        field = "lineage." + ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = f"unknown key {first['loc'][-1]!r} (rule: only documented keys)"
        raise ValidationError(f"{field}: {msg}", field=field, rule=first["type"]) from None


class LineageIndex:
    """Reverse lineage: feature view → versions, model version → children / fallback users."""

    def __init__(self) -> None:
        self._by_view: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self._children: dict[tuple[str, int], set[tuple[str, int]]] = defaultdict(set)
        self._fallback_users: dict[str, set[tuple[str, int]]] = defaultdict(set)

    def add(self, name: str, version: int, lineage: dict[str, Any]) -> None:
        key = (name, version)
        for fv in lineage.get("feature_views") or []:
            self._by_view[fv["name"]].add(key)
        parent = lineage.get("parent_model")
        if parent and parent.get("version") is not None:
            self._children[(parent["name"], int(parent["version"]))].add(key)
        fallback = lineage.get("fallback_model")
        if fallback:
            self._fallback_users[fallback["name"]].add(key)

    def using_view(self, view: str) -> list[tuple[str, int]]:
        return sorted(self._by_view.get(view, ()))

    def children(self, name: str, version: int) -> list[tuple[str, int]]:
        return sorted(self._children.get((name, version), ()))

    def fallback_users(self, name: str) -> list[tuple[str, int]]:
        return sorted(self._fallback_users.get(name, ()))
