"""The public surface: exactly what ``raymlp`` and ``raymlp.client`` export, and that it resolves.

Changing either set is an API change: update this test on purpose, never as a side effect.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

import raymlp
import raymlp.client

CLIENT_API = {
    "connect",
    "Platform",
    "FeaturesClient",
    "RegistryClient",
    "MonitorClient",
    "ServeClient",
    "ModelVersion",
    "RegistryWatcher",
    "PredictionLogger",
}
TOP_API = {
    "connect",
    "Platform",
    "PlatformConfig",
    "load_platform_config",
    "RayMLPError",
    "__version__",
}


def test_client_all_is_pinned():
    assert set(raymlp.client.__all__) == CLIENT_API
    assert len(raymlp.client.__all__) == len(CLIENT_API)  # no duplicates


def test_top_level_all_is_pinned():
    assert set(raymlp.__all__) == TOP_API
    assert len(raymlp.__all__) == len(TOP_API)


@pytest.mark.parametrize(
    "module, name",
    [(raymlp.client, n) for n in sorted(CLIENT_API)] + [(raymlp, n) for n in sorted(TOP_API)],
)
def test_every_exported_name_resolves(module, name):
    assert getattr(module, name) is not None


def test_rpc_plumbing_is_not_public():
    for name in ("ActorClient", "call", "RegistryRPC"):
        assert name not in raymlp.client.__all__
        assert name not in raymlp.__all__


def test_platform_namespaces_have_real_types():
    hints = {
        name: typing.get_type_hints(getattr(raymlp.client.Platform, name).func)["return"]
        for name in ("features", "registry", "monitor", "serve")
    }
    assert hints == {
        "features": raymlp.client.FeaturesClient,
        "registry": raymlp.client.RegistryClient,
        "monitor": raymlp.client.MonitorClient,
        "serve": raymlp.client.ServeClient,
    }


def test_the_package_ships_py_typed():
    assert (Path(raymlp.__file__).parent / "py.typed").is_file()
