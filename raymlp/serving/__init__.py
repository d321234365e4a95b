"""Serving: the Ray Serve application users call (``raymlp serve deploy``).

``Gateway`` (FastAPI ingress: auth, validation, cache, canary/shadow/blue-green routing,
fallback chain, circuit breakers) → ``ModelServer`` (versions multiplexed by id, ``@serve.batch``,
autoscaled) and ``FallbackServer`` (the fallback models on replicas of their own).

- :mod:`~raymlp.serving.app`: ``build_app(cfg)``, ``serve_config(cfg, http)``;
- :mod:`~raymlp.serving.gateway`, :mod:`~raymlp.serving.model_server`: the deployments;
- pure logic, testable without Ray: :mod:`~raymlp.serving.routing` (canary split),
  :mod:`~raymlp.serving.breaker`, :mod:`~raymlp.serving.cache`, :mod:`~raymlp.serving.chain`,
  :mod:`~raymlp.serving.rules`, :mod:`~raymlp.serving.shadow`, :mod:`~raymlp.serving.errors`,
  :mod:`~raymlp.serving.auth`, :mod:`~raymlp.serving.schemas`.

The SDK side is ``p.serve`` (:class:`raymlp.client._serve.ServeClient`).
"""

__all__: list[str] = []
