"""Model registry and experiment tracking: pure logic, no Ray actors, no SDK.

- :mod:`~raymlp.registry.state`: the event-sourced state (``apply(event)``);
- :mod:`~raymlp.registry.commands`, :mod:`~raymlp.registry.tracking`: rules → events;
- :mod:`~raymlp.registry.views`: read-side dicts; :mod:`~raymlp.registry.query`: run search;
- :mod:`~raymlp.registry.rbac`: roles, tenants, four-eyes approvals;
- :mod:`~raymlp.registry.signature`: model signatures and request validation;
- :mod:`~raymlp.registry.lineage`: lineage records and the reverse index;
- :mod:`~raymlp.registry.traffic_split`: the serving traffic state (canary, shadow, standby);
- :mod:`~raymlp.registry.eventlog`: the Delta event table; :mod:`~raymlp.registry.webhooks`:
  signed, retried webhook delivery; :mod:`~raymlp.registry.service`: all of it bound together.

The actor ``actors/registry.py`` serves it; ``raymlp.client._registry`` is the SDK.
"""

from raymlp.registry.events import Event, EventKind
from raymlp.registry.lineage import Lineage, parse_lineage
from raymlp.registry.service import RegistryService
from raymlp.registry.signature import Signature, parse_signature, validate_request
from raymlp.registry.state import RegistryState
from raymlp.registry.webhooks import sign, verify_signature

__all__ = [
    "Event",
    "EventKind",
    "Lineage",
    "parse_lineage",
    "RegistryService",
    "RegistryState",
    "Signature",
    "parse_signature",
    "validate_request",
    "sign",
    "verify_signature",
]
