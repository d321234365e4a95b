"""Network helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import socket

__all__ = ["free_port"]

# Ray hands ports in this range to its worker processes; a test server there could collide.
_RAY_WORKER_PORTS = range(10002, 20000)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside 10002-19999, which Ray keeps for worker processes."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RAY_WORKER_PORTS:
            return port
