"""Integration tests use the session cluster and platform fixtures of ``tests/conftest.py``."""
