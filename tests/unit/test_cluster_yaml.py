"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own JSON schema)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_validates_against_rays_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t["resources"].get("GPU") for t in types.values()), "needs a GPU worker type"
    assert any("raymlp" in c for c in config["setup_commands"])
    assert any("raymlp up" in c for c in config["head_start_ray_commands"])


def test_a_broken_cluster_yaml_is_caught_by_the_same_check():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["max_workers"] = "many"
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as e:
        assert "max_workers" in str(e.path) or "many" in e.message
    else:
        raise AssertionError("schema accepted max_workers='many'")
