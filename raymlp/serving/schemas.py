"""Request and response bodies of the HTTP API (pydantic; they also make ``/openapi.json``).

::

    POST /v1/predictions
    {"model_id": "customer-churn", "features": {"tenure_months": 24, "monthly_charges": 89.99}}
    {"model_id": "customer-churn", "entity": {"customer_id": "12345"}, "version": 3}
    -> {"prediction": "stay", "probability": 0.15, "model_version": "3", "latency_ms": 4.1,
        "request_id": "9f2c...", "route": "primary", "model_id": "customer-churn"}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ROUTES",
    "Route",
    "PredictionRequest",
    "Instance",
    "BatchPredictionRequest",
    "PredictionResponse",
    "BatchPredictionResponse",
    "FeedbackRequest",
    "FeedbackResponse",
    "ErrorDetail",
    "ErrorResponse",
    "ModelSummary",
    "ModelsResponse",
    "ReadyResponse",
]

#: Who answered a prediction.
ROUTES = ("primary", "canary", "fallback", "rule", "default", "cache")
Route = Literal["primary", "canary", "fallback", "rule", "default", "cache"]

_MAX_ID = 128


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Instance(_Body):
    """One thing to predict: its features, or an entity whose features the online store has
    (request-time fields may be given in ``features`` beside an entity)."""

    features: dict[str, Any] | None = Field(
        None, description="Feature name -> value, as in the model signature."
    )
    entity: dict[str, str | int] | None = Field(
        None,
        description="Entity join keys, e.g. {'customer_id': '12345'}: features are "
        "looked up in the online store.",
    )

    @model_validator(mode="after")
    def _something(self) -> Instance:
        if self.features is None and self.entity is None:
            raise ValueError("give 'features' or 'entity' (rule: one of them is required)")
        if self.entity is not None and not self.entity:
            raise ValueError("'entity' is empty (rule: the entity's join keys)")
        return self


class PredictionRequest(Instance):
    """``POST /v1/predictions``."""

    model_id: str = Field(min_length=1, max_length=_MAX_ID, description="Served model name.")
    version: int | None = Field(
        None, ge=1, description="Pin a version (default: routed: stable or canary)."
    )


class BatchPredictionRequest(_Body):
    """``POST /v1/predictions:batch``: many instances of one model in one call."""

    model_id: str = Field(min_length=1, max_length=_MAX_ID, description="Served model name.")
    instances: list[Instance] = Field(
        min_length=1,
        max_length=10_000,
        description="The instances, answered in order (the gateway's "
        "max_instances_per_request, default 1000, may allow fewer).",
    )
    version: int | None = Field(None, ge=1, description="Pin a version for every instance.")


class PredictionResponse(BaseModel):
    """One prediction."""

    prediction: str | None = Field(description="The predicted class (or value).")
    probability: float | None = Field(description="Probability of the positive class.")
    model_version: str = Field(
        description="Version that answered: '3', 'customer-churn-fallback:2', 'rule:<name>' "
        "or 'default'."
    )
    latency_ms: float = Field(description="Time spent in the gateway, milliseconds.")
    request_id: str = Field(description="Id to send feedback with (POST /v1/feedback).")
    route: Route = Field(
        description="Who answered: primary, canary, fallback, rule, default or cache."
    )
    model_id: str = Field(description="The model asked for.")


class BatchPredictionResponse(BaseModel):
    """The answers of ``POST /v1/predictions:batch``, in instance order."""

    predictions: list[PredictionResponse]
    request_id: str
    latency_ms: float


class FeedbackRequest(_Body):
    """``POST /v1/feedback``: the ground truth of an earlier prediction — one label per
    request id this service answered for the caller's tenant (404 otherwise, 409 for a
    second label)."""

    request_id: str = Field(
        min_length=1, max_length=256, description="The prediction's id (its 'request_id')."
    )
    label: str | int | float | bool = Field(
        description="The true label (a finite number, string or bool)."
    )
    model_id: str | None = Field(
        None,
        min_length=1,
        max_length=_MAX_ID,
        description="Model, if known: must be the model of the original request.",
    )


class FeedbackResponse(BaseModel):
    """202: the label was stored."""

    request_id: str
    accepted: bool


class ReadyResponse(BaseModel):
    """``GET /readyz``: ``models`` only for a caller with a key (its tenant's models)."""

    status: Literal["ready"]
    models: dict[str, int] | None = Field(
        None, description="The caller's tenant's models -> stable version (with a key only)."
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable code, e.g. 'validation_error'.")
    message: str = Field(description="One line a person can act on.")
    details: Any = Field(None, description="Structured facts: field, value, rule...")


class ErrorResponse(BaseModel):
    """Every error: 400, 401, 403, 404, 409, 413, 422, 429 or 503."""

    error: ErrorDetail


class ModelSummary(BaseModel):
    model_id: str
    alias: str
    tenant: str | None
    stable_version: int | None
    canary: dict[str, Any] | None
    shadow_version: int | None
    standby_version: int | None
    fallback: dict[str, Any] | None
    steps: list[float]
    ready: bool
    problems: list[str]


class ModelsResponse(BaseModel):
    models: list[ModelSummary]
