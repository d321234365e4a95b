"""The one HTTP webhook target: what every outgoing webhook (registry events, monitor alerts)
shares. ``raymlp._private.webhooks`` delivers to any :class:`WebhookTarget`; each user adds only
its own filter fields (:class:`~raymlp.config.RegistryWebhook`,
:class:`~raymlp.config.AlertWebhook`).

Notifications are always signed: a target names the environment variable holding its HMAC
secret, or says ``insecure: true`` explicitly (a receiver then cannot tell our POSTs from a
forger's)::

    webhooks:
      - {url: https://ci.example.com/hook, secret_env: RAYMLP_WEBHOOK_SECRET}
      - {url: http://localhost:9000/dev, insecure: true}      # unsigned, on purpose
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from raymlp.config._base import StrictModel

__all__ = ["WebhookTarget"]


class WebhookTarget(StrictModel):
    """An http(s) endpoint that JSON bodies are POSTed to, HMAC-signed, with retries."""

    url: str = Field(description="http(s) URL bodies are POSTed to (one JSON body per request).")
    secret_env: str | None = Field(
        None,
        description=(
            "Name of the environment variable (in the sending process) holding the HMAC-SHA256 "
            "secret; the body is signed in the X-RayMLP-Signature header. Required unless "
            "insecure is true; a delivery whose secret is not set is never sent unsigned."
        ),
    )
    insecure: bool = Field(
        False,
        description=(
            "Send bodies unsigned (no secret_env). Must be said explicitly: a receiver of "
            "unsigned notifications cannot tell them from forged ones."
        ),
    )
    timeout_s: float = Field(5.0, gt=0, le=120, description="Timeout of one delivery attempt.")
    max_retries: int = Field(
        3, ge=0, le=20, description="Retries after a failed delivery (5xx, timeout, refused)."
    )
    backoff_s: float = Field(
        0.5, gt=0, le=60, description="First retry delay; doubles per retry (with jitter)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"webhook url {v!r} is not an http(s) URL (rule: http://host/...)")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                f"secret_env {v!r} is not an environment variable name (rule: [A-Za-z_][A-Za-z0-9_]*)"
            )
        return v

    @model_validator(mode="after")
    def _signed_or_insecure(self) -> WebhookTarget:
        if self.secret_env is None and not self.insecure:
            raise ValueError(
                f"webhook {self.url!r} has no secret_env (rule: notifications are signed; set "
                "secret_env to the variable holding the HMAC secret, or insecure: true to send "
                "unsigned on purpose)"
            )
        if self.secret_env is not None and self.insecure:
            raise ValueError(
                f"webhook {self.url!r} sets both secret_env {self.secret_env!r} and insecure: "
                "true (rule: one or the other)"
            )
        return self
