"""A registered model version as the SDK, the Serve replicas and batch inference see it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ModelVersion"]


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version (``p.registry.get(...)``). Also readable as a dict."""

    name: str
    version: int
    artifact_uri: str
    stage: str
    aliases: list[str]
    tenant: str
    signature: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    card: str | None = None
    description: str = ""
    created_at: float = 0.0
    created_by: str = ""
    #: sha256 of every artifact file, recorded at registration (None: registered before digests
    #: were recorded); :func:`~raymlp.predictor.artifact.load_predictor` verifies them.
    digests: dict[str, str] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelVersion:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)
