"""Fixtures of the security tests: one live HTTP application (auth on, tenants acme and
globex, default gateway settings) shared by the HTTP modules that need nothing else
(:func:`tenants_app`), so the package deploys it once.

The modules that use it run as one block at the end of this package (see
:func:`pytest_collection_modifyitems`): the application owns the platform actors and Serve
while it is up, so no other test of the package (its own platform, its own application) may
run while it lives, and a package-scoped fixture lives until the package's last test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security._http_app import App, http_app

_HERE = Path(__file__).parent
_SHARED = "tenants_app"


@pytest.fixture(scope="package")
def tenants_app(ray_cluster, tmp_path_factory) -> Iterator[App]:
    """The HTTP application of :mod:`tests.security._http_app` with the default gateway
    settings, for the whole package. Tests that share it must not depend on absolute
    counters (prediction log, shipper, breakers): another module may have used it first."""
    yield from http_app(tmp_path_factory.mktemp("sec-shared"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move this package's tests that use :func:`tenants_app` behind its other tests (each
    group keeping its order), so the shared application is set up after every other
    application of the package is gone and torn down as soon as its last user is done."""
    slots = [i for i, item in enumerate(items) if _HERE in Path(item.path).parents]
    mine = [items[i] for i in slots]
    shared = [item for item in mine if _SHARED in getattr(item, "fixturenames", ())]
    if not shared:
        return
    others = [item for item in mine if _SHARED not in getattr(item, "fixturenames", ())]
    for slot, item in zip(slots, others + shared, strict=True):
        items[slot] = item
