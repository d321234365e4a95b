"""The model artifact: a directory that fully describes one trained model, and its loader.

Layout (``"format": "raymlp.model/v1"``)::

    model.json              what to build: factory + kwargs, input_dim, class names, threshold,
                            variants, feature refs, training facts
    weights.pt              fp32 state_dict (torch.save; loaded with weights_only=True)
    weights_int8.pt         optional INT8 dynamic-quantized state_dict (variant "int8")
    preprocessor.json       the fitted Preprocessor (same transform in training and serving)
    signature.json          {"inputs": [{"name", "dtype", ...}], "output": {"name", "kind", "labels"}}
    reference_profile.json  train-feature distributions for drift detection
                            (written by raymlp.training.profile)
    metrics.json            test-split metrics (and the int8 deltas)
    card.md                 the model card

:func:`load_predictor` turns a directory (or a ``s3://``/``gs://`` URI) into a :class:`Predictor`
whose ``predict_proba`` takes a pyarrow table, a dict of columns, a list of row dicts or a
DataFrame, preprocesses it vectorised and runs one forward pass::

    >>> pred = load_predictor("/root/models/customer-churn/3")
    >>> pred.predict_proba([{"tenure_months": 3, "monthly_charges": 99.0, "contract": "one-year",
    ...                      "support_calls": 4}])
    array([0.71...])
    >>> pred.predict([{...}])           # class names
    ['high_risk']

Before reading anything, :func:`load_predictor` checks what it is handed: the files against
the ``digests`` the registry recorded for the version (a missing, extra or changed file raises
:class:`~raymlp.errors.ArtifactIntegrityError`), and the factory ``model.json`` names against
the allowed modules (``registry.model_factory_modules``) before importing it. Serving passes
both from the registry and the platform config::

    >>> load_predictor(mv.artifact_uri, digests=raw["digests"],
    ...                factory_modules=cfg.registry.model_factory_modules)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raymlp.errors import NotFoundError, ValidationError
from raymlp.predictor.factory import build_model
from raymlp.predictor.integrity import check_factory, default_factory_modules, verify_artifact
from raymlp.predictor.preprocessing import Preprocessor

__all__ = [
    "FORMAT",
    "save_artifact",
    "load_predictor",
    "Predictor",
    "read_json",
    "quantize_int8",
]

FORMAT = "raymlp.model/v1"
_FILES = {
    "spec": "model.json",
    "weights": "weights.pt",
    "int8": "weights_int8.pt",
    "preprocessor": "preprocessor.json",
    "signature": "signature.json",
    "profile": "reference_profile.json",
    "metrics": "metrics.json",
    "card": "card.md",
}


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=_json_default, allow_nan=False) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _finite(data: Any) -> Any:
    """NaN/inf → None, so every JSON file is strict JSON."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    if isinstance(data, float | np.floating) and not np.isfinite(data):
        return None
    return data


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """INT8 dynamic quantization of every ``nn.Linear`` (weights int8, activations quantized on
    the fly): smaller and usually faster on CPU."""
    with _quiet_quantization():
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


@contextlib.contextmanager
def _quiet_quantization() -> Iterator[None]:
    """torch.ao.quantization and quantized tensors are deprecated in favour of torchao, which is
    not a dependency; they still work, so their deprecation notices are silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated")
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\.")
        yield


def save_artifact(
    out_dir: str | os.PathLike[str],
    *,
    factory: str,
    kwargs: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    preprocessor: Preprocessor,
    signature: dict[str, Any],
    profile: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    card: str = "",
    spec_extra: dict[str, Any] | None = None,
    int8_state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact directory (created if needed); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = {"fp32": _FILES["weights"]}
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, out / _FILES["weights"])
    if int8_state_dict is not None:
        torch.save(int8_state_dict, out / _FILES["int8"])
        variants["int8"] = _FILES["int8"]
    spec = {
        "format": FORMAT,
        "framework": "torch",
        "factory": factory,
        "kwargs": kwargs,
        "input_dim": preprocessor.output_dim,
        "class_names": list(signature["output"].get("labels") or ["0", "1"]),
        "threshold": 0.5,
        "variants": variants,
        **(spec_extra or {}),
    }
    _dump(out / _FILES["spec"], _finite(spec))
    (out / _FILES["preprocessor"]).write_text(preprocessor.to_json())
    _dump(out / _FILES["signature"], signature)
    _dump(out / _FILES["profile"], _finite(profile or {}))
    _dump(out / _FILES["metrics"], _finite(metrics or {}))
    (out / _FILES["card"]).write_text(card)
    return out


def _localize(path_or_uri: str | os.PathLike[str]) -> Path:
    """A local directory for the artifact (downloaded to a temp dir for object-store URIs)."""
    s = str(path_or_uri)
    if "://" not in s or s.startswith("file://"):
        p = Path(s[len("file://") :] if s.startswith("file://") else s)
        if not (p / _FILES["spec"]).is_file():
            raise NotFoundError(
                f"{s!r} is not a model artifact (no {_FILES['spec']})", kind="artifact", name=s
            )
        return p
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(s)
    dest = Path(tempfile.mkdtemp(prefix="raymlp-model-"))
    pafs.copy_files(
        base, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return _localize(dest)


def read_json(path_or_uri: str | os.PathLike[str], name: str) -> Any:
    """One JSON file of an artifact: ``spec``, ``signature``, ``profile``, ``metrics``..."""
    return json.loads((_localize(path_or_uri) / _FILES[name]).read_text())


class Predictor:
    """A loaded model: preprocessing + network, ready for batched CPU/GPU inference.

    Attributes:
        spec: ``model.json``; signature: ``signature.json``; preprocessor: the fitted transform;
        class_names: ``[negative, positive]``; variant: ``fp32`` or ``int8``.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        preprocessor: Preprocessor,
        model: torch.nn.Module,
        signature: dict[str, Any],
        variant: str = "fp32",
        device: str | torch.device = "cpu",
    ) -> None:
        self.spec = spec
        self.preprocessor = preprocessor
        self.model = model.eval()
        self.signature = signature
        self.variant = variant
        self.device = torch.device(device)
        self.class_names = list(spec.get("class_names") or ["0", "1"])
        self.threshold = float(spec.get("threshold", 0.5))

    @property
    def input_names(self) -> list[str]:
        return self.preprocessor.input_names

    def __repr__(self) -> str:
        return (
            f"Predictor({self.spec.get('factory')}, inputs={len(self.input_names)}, "
            f"variant={self.variant!r})"
        )

    def predict_proba(self, data: Any) -> np.ndarray:
        """Probability of the positive class, one float64 per row.

        ``data``: pyarrow Table/RecordBatch, dict of columns, one row dict, list of row dicts or
        a pandas DataFrame. Missing model inputs raise ValidationError naming the feature.
        """
        x = self.preprocessor.transform(data)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self.device.type != "cpu":
                t = t.to(self.device, non_blocking=True)
            logits = self.model(t).reshape(-1).float()
            return torch.sigmoid(logits).cpu().numpy().astype(np.float64)

    def predict(self, data: Any) -> list[str]:
        """Class name per row (``class_names[1]`` when the probability ≥ the threshold)."""
        p = self.predict_proba(data)
        neg, pos = self.class_names
        return [pos if v >= self.threshold else neg for v in p]


def load_predictor(
    path_or_uri: str | os.PathLike[str],
    variant: str = "fp32",
    device: str = "cpu",
    *,
    digests: Mapping[str, str] | None = None,
    factory_modules: Sequence[str] | None = None,
) -> Predictor:
    """Load a model artifact directory (or URI) as a :class:`Predictor`.

    Args:
        variant: ``fp32`` (default) or ``int8`` (the dynamic-quantized copy, CPU only).
        device: torch device for the fp32 variant (``cuda`` for GPU batch inference).
        digests: the registered ``{path: "sha256:<hex>"}`` of every file; checked before
            anything is read (None: not checked — a local, unregistered directory).
        factory_modules: modules ``model.json``'s factory may come from (None: the default
            ``registry.model_factory_modules``, i.e. raymlp's own and ``torch.nn``).

    Raises:
        NotFoundError: not an artifact, or the variant was not produced.
        ArtifactIntegrityError: a file differs from ``digests``, or the factory is not allowed.
    """
    root = _localize(path_or_uri)
    if digests is not None:
        verify_artifact(root, digests, what=str(path_or_uri))
    spec = json.loads((root / _FILES["spec"]).read_text())
    check_factory(
        spec.get("factory"),
        default_factory_modules() if factory_modules is None else factory_modules,
        what=str(path_or_uri),
    )
    if spec.get("format") != FORMAT:
        raise ValidationError(
            f"artifact format {spec.get('format')!r} is not {FORMAT!r}",
            field="format",
            value=spec.get("format"),
        )
    variants = spec.get("variants") or {"fp32": _FILES["weights"]}
    if variant not in variants:
        raise NotFoundError(
            f"model variant {variant!r} is not in {str(root)!r} (have: {', '.join(variants)})",
            kind="variant",
            name=variant,
        )
    pre = Preprocessor.from_json((root / _FILES["preprocessor"]).read_text())
    signature = json.loads((root / _FILES["signature"]).read_text())
    model = build_model(spec["factory"], spec["input_dim"], spec.get("kwargs") or {})
    with _quiet_quantization():  # loading quantized tensors goes through TypedStorage
        state = torch.load(
            io.BytesIO((root / variants[variant]).read_bytes()),
            map_location="cpu",
            weights_only=True,
        )
    if variant == "int8":
        model = quantize_int8(model)
        device = "cpu"
        with _quiet_quantization():
            model.load_state_dict(state)
    else:
        model.load_state_dict(state)
    model = model.to(device)
    return Predictor(spec, pre, model, signature, variant=variant, device=device)
