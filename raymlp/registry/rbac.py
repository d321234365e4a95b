"""Who may do what in the registry: roles, tenants and the four-eyes rule of approvals.

Roles (a principal may hold several)::

    viewer     read models, versions, runs, lineage, events
    developer  viewer + track experiments, register versions, set stages/aliases, request
               promotions, roll back
    approver   viewer + approve or reject promotion requests (never their own), roll back
    admin      everything, in every tenant

Tenants isolate models and experiments: a principal sees and changes only those of its own
tenant (admins excepted). Denials raise :class:`~raymlp.errors.PermissionDeniedError`
(HTTP 403) naming the principal, the action and the role it needs::

    >>> actor = resolve_actor(Authenticator(AuthConfig(), None), {"name": "ci"})
    >>> actor.roles                       # auth off: everyone is a local admin
    ('admin',)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raymlp._private.credentials import Authenticator
from raymlp.config import AuthConfig  # noqa: F401 - the doctest above
from raymlp.errors import PermissionDeniedError

__all__ = ["Actor", "Action", "resolve_actor", "authorize", "check_tenant", "check_not_requester"]


class Action:
    READ = "read"
    WRITE = "write"
    APPROVE = "approve"
    ROLLBACK = "rollback"
    ADMIN = "admin"


_ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({Action.READ}),
    "developer": frozenset({Action.READ, Action.WRITE, Action.ROLLBACK}),
    "approver": frozenset({Action.READ, Action.APPROVE, Action.ROLLBACK}),
    "admin": frozenset({Action.READ, Action.WRITE, Action.APPROVE, Action.ROLLBACK, Action.ADMIN}),
}

_REQUIRED_ROLE = {
    Action.READ: "viewer",
    Action.WRITE: "developer",
    Action.APPROVE: "approver",
    Action.ROLLBACK: "developer or approver",
    Action.ADMIN: "admin",
}


@dataclass(frozen=True)
class Actor:
    """The principal a registry call acts as, with roles and tenant as the platform knows them."""

    name: str
    tenant: str
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def can(self, action: str) -> bool:
        return any(action in _ROLE_ACTIONS.get(r, ()) for r in self.roles)


def resolve_actor(authenticator: Authenticator, credential: dict[str, Any] | None) -> Actor:
    """The acting principal, verified from the caller's credential (API key or service token):
    roles and tenant come from the platform config, never from the caller. With auth off every
    caller is an admin of the default tenant."""
    known = authenticator.authenticate(credential)
    return Actor(name=known.name, tenant=known.tenant, roles=tuple(known.roles))


def authorize(actor: Actor, action: str, what: str = "") -> None:
    """Raise PermissionDeniedError unless ``actor`` may perform ``action``."""
    if not actor.can(action):
        required = _REQUIRED_ROLE[action]
        target = f" {what}" if what else ""
        raise PermissionDeniedError(
            f"principal {actor.name!r} (roles {list(actor.roles)}) may not {action}{target} "
            f"(rule: needs role {required})",
            principal=actor.name,
            action=action,
            required_role=required,
        )


def check_tenant(actor: Actor, tenant: str, what: str) -> None:
    """Raise PermissionDeniedError when ``what`` belongs to another tenant (admins pass)."""
    if tenant != actor.tenant and not actor.is_admin:
        raise PermissionDeniedError(
            f"{what} belongs to tenant {tenant!r}; principal {actor.name!r} is in tenant "
            f"{actor.tenant!r} (rule: tenants are isolated)",
            principal=actor.name,
            tenant=actor.tenant,
            rule="tenant isolation",
        )


def check_not_requester(actor: Actor, requested_by: str, request_id: str) -> None:
    """The four-eyes rule: nobody approves their own request, not even an admin."""
    if actor.name == requested_by:
        raise PermissionDeniedError(
            f"principal {actor.name!r} requested {request_id} and may not approve it "
            "(rule: approval by a different principal)",
            principal=actor.name,
            action=Action.APPROVE,
            rule="four-eyes",
            request_id=request_id,
        )
