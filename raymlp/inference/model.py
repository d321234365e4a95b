"""Which model scores, and how feature-store columns become its inputs.

Batch and streaming inference resolve the model the same way (a pinned version, else the
holder of an alias, through ``p.registry.get``) and feed it the same way as serving does:
feature refs ``view:feature`` come back from the feature store as ``view__feature`` columns and
are handed to the model under its own input names (the short name when the model was trained on
it). The model then runs :meth:`~raymlp.predictor.artifact.Predictor.predict_proba` — the same
preprocessing code as training and serving::

    mv = resolve_model(p, PredictionModelRef(name="customer-churn", alias="production"))
    spec = read_json(mv.artifact_uri, "spec")
    refs = input_refs(spec, None, predictor.input_names)   # {"tenure_months": "customer_profile:..."}
    table = with_model_inputs(joined, refs)                  # adds "tenure_months" columns
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from raymlp.config import PredictionModelRef
from raymlp.errors import ValidationError

__all__ = ["resolve_model", "feature_column", "input_refs", "with_model_inputs", "labels_for"]


def resolve_model(platform: Any, ref: PredictionModelRef) -> Any:
    """The registered :class:`~raymlp.client.ModelVersion` that ``ref`` names:
    ``ref.version`` when set, else the holder of ``ref.alias`` (NotFoundError if none)."""
    if ref.version is not None:
        return platform.registry.get(ref.name, version=ref.version)
    return platform.registry.get(ref.name, alias=ref.alias)


def feature_column(ref: str) -> str:
    """``"view:feature"`` → ``"view__feature"`` (the feature store's column name)."""
    view, _, feature = ref.partition(":")
    return f"{view}__{feature}"


def input_refs(
    spec: Mapping[str, Any], override: Iterable[str] | None, input_names: Iterable[str]
) -> dict[str, str]:
    """``{model input: "view:feature"}`` to look up for the model.

    ``override`` (``view:feature`` refs from a job config) wins over the refs recorded in the
    artifact (``spec["feature_refs"]``); a ref feeds the input of its short name when the model
    has one, else the ``view__feature`` input.
    """
    inputs = set(input_names)
    if override:
        out: dict[str, str] = {}
        for ref in override:
            short = ref.partition(":")[2]
            out[short if short in inputs else feature_column(ref)] = ref
        return out
    recorded = dict(spec.get("feature_refs") or {})
    return {name: ref for name, ref in recorded.items() if name in inputs}


def with_model_inputs(data: Any, refs: Mapping[str, str]) -> Any:
    """``data`` (a pyarrow Table or a dict of columns) plus, for every input missing from it,
    the ``view__feature`` column of its ref under the input's name (the same arrays under a
    second name, no copy)."""
    is_table = isinstance(data, pa.Table)
    names = set(data.column_names if is_table else data)
    if not is_table:
        data = dict(data)
    for name, ref in refs.items():
        if name in names:
            continue
        col = feature_column(ref)
        if col not in names:
            raise ValidationError(
                f"feature {ref!r} (model input {name!r}) is not in the data "
                f"(rule: join it, or give the column {name!r})",
                field=name,
                value=ref,
                rule="model input present",
            )
        if is_table:
            data = data.append_column(name, data.column(col))
        else:
            data[name] = data[col]
        names.add(name)
    return data


def labels_for(probability: Any, class_names: list[str], threshold: float) -> pa.Array:
    """Class name per row (``class_names[1]`` when the probability ≥ ``threshold``)."""
    import numpy as np

    neg, pos = list(class_names)[:2]
    p = np.asarray(probability, dtype=np.float64)
    return pa.array(np.where(p >= threshold, pos, neg), pa.string())
