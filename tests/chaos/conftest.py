"""The chaos suite's served platform: one application for the whole module (start-up is the
expensive part) on the session cluster of ``tests/conftest.py``, torn down after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench._chaos import ChaosApp, start_app


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory) -> Iterator[ChaosApp]:
    a = start_app(tmp_path_factory.mktemp("chaos"))
    try:
        yield a
    finally:
        a.close()
