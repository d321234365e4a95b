"""Which request ids accept feedback: the gateway's record of the predictions it answered.

``POST /v1/feedback`` is bound to the original request: the id must be one this gateway
replica answered (the most recent ``gateway.feedback_window`` of them), for the caller's
tenant (admins: any) and, when the body names one, for that model. An unknown or foreign id
answers 404 — the same answer, so a caller cannot probe another tenant's ids — and a second
label for the same id answers 409. Claims are reserved first and committed once the label is
stored, so a failed store can be retried::

    >>> led = RequestLedger(max_entries=2)
    >>> led.note("r1", tenant="acme", model="churn")
    >>> led.claim("r1", tenant="acme", admin=False, model=None).model
    'churn'
    >>> led.commit("r1")
    >>> led.claim("r1", tenant="acme", admin=False, model=None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    raymlp.errors.ConflictError: request 'r1' already has a label ...

Bounded (an LRU by answer time); one event loop uses it, so no locks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from raymlp.errors import ConflictError, NotFoundError

__all__ = ["LedgerEntry", "RequestLedger"]


@dataclass
class LedgerEntry:
    """One answered request: whose, of which model, and where its label stands."""

    tenant: str | None
    model: str
    #: "open" (no label), "pending" (a label being stored) or "labelled"
    state: str = "open"


class RequestLedger:
    """The answered request ids of one gateway replica (see the module docstring)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, LedgerEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def note(self, request_id: str, *, tenant: str | None, model: str) -> None:
        """Record an answered prediction (the oldest falls out beyond ``max_entries``)."""
        self._entries[request_id] = LedgerEntry(tenant, model)
        self._entries.move_to_end(request_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def claim(
        self, request_id: str, *, tenant: str | None, admin: bool, model: str | None
    ) -> LedgerEntry:
        """Reserve ``request_id`` for one label, or raise NotFoundError (unknown, another
        tenant's, another model's) or ConflictError (labelled, or a label being stored)."""
        entry = self._entries.get(request_id)
        if (
            entry is None
            or (not admin and entry.tenant is not None and entry.tenant != tenant)
            or (model is not None and model != entry.model)
        ):
            raise NotFoundError(
                f"request {request_id!r} is not a prediction this service answered for you "
                "(rule: feedback names a recent request id of the caller's tenant)",
                kind="request",
                name=request_id,
            )
        if entry.state != "open":
            raise ConflictError(
                f"request {request_id!r} already has a label (rule: one label per request)",
                kind="request",
                name=request_id,
                rule="one label per request",
            )
        entry.state = "pending"
        return entry

    def commit(self, request_id: str) -> None:
        """The reserved label was stored."""
        entry = self._entries.get(request_id)
        if entry is not None:
            entry.state = "labelled"

    def release(self, request_id: str) -> None:
        """The reserved label could not be stored: the id accepts a label again."""
        entry = self._entries.get(request_id)
        if entry is not None and entry.state == "pending":
            entry.state = "open"
