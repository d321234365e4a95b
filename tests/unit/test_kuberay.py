"""configs/kuberay/rayservice.yaml: a well-formed RayService whose Serve config is the churn app.

Without a Kubernetes API server this checks the structure KubeRay's CRD requires, that the
inline ``serveConfigV2`` is a Serve config raymlp's own builder accepts, and that it has not
drifted from ``configs/serve/churn.yaml`` (regenerate with ``raymlp serve config``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml

from raymlp.config import HTTPConfig, ServeAppConfig, load_config, load_serve_config
from raymlp.serving.app import serve_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "configs/kuberay/rayservice.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_rayservice_kind_and_cluster(manifest):
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayService"
    assert manifest["metadata"]["name"]
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__  # the image's Ray is the one we test with
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in _containers(head)[0]["ports"]}
    assert ports["dashboard"] == 8265 and ports["serve"] == 8000 and ports["gcs-server"] == 6379
    hook = _containers(head)[0]["lifecycle"]["postStart"]["exec"]["command"]
    assert "raymlp up" in " ".join(hook)


def test_worker_groups_cpu_and_gpu(manifest):
    groups = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert "rayStartParams" in g
    gpu = _containers(groups["gpu-workers"])[0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1"
    cpu = _containers(groups["cpu-workers"])[0]["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"]


def test_every_pod_shares_one_object_store_root(manifest):
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    roots = set()
    for g in groups:
        for c in _containers(g):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            roots.add(env["RAYMLP_STORAGE_ROOT"])
            assert "AWS_SECRET_ACCESS_KEY" not in env  # credentials come from the service account
    assert len(roots) == 1 and roots.pop().startswith("s3://")


def test_serve_config_v2_is_the_churn_app(manifest):
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve["http_options"]["host"] == "0.0.0.0"
    (app,) = serve["applications"]
    assert app["import_path"] == "raymlp.serving.app:app_builder"
    cfg = load_config(ServeAppConfig, app["args"]["config"], "serveConfigV2")  # validates
    assert cfg.model("customer-churn") is not None
    expected = serve_config(
        load_serve_config(ROOT / "configs/serve/churn.yaml"), HTTPConfig(host="0.0.0.0")
    )
    assert serve == expected, (
        "serveConfigV2 drifted from configs/serve/churn.yaml: regenerate it with "
        "`raymlp serve config --config configs/serve/churn.yaml` (http host 0.0.0.0)"
    )
