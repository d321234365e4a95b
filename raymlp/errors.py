"""The one error tree of raymlp.

Every error the platform raises on purpose derives from :class:`RayMLPError`::

    RayMLPError                      code               HTTP
    ├── ConfigError                  config_error        400   a YAML/config file is wrong
    ├── BadRequestError              bad_request         400   malformed request (bad JSON, bad args)
    ├── ValidationError              validation_error    422   data violates a schema or rule
    │   └── SchemaError              schema_error        422   a dataset's columns/dtypes are wrong
    ├── AuthenticationError          unauthenticated     401   no or unknown API key
    ├── PermissionDeniedError        permission_denied   403   principal lacks role / other tenant
    ├── NotFoundError                not_found           404   unknown model, view, version, run...
    ├── ConflictError                conflict            409   concurrent change, duplicate, bad transition
    ├── OverloadedError              overloaded          429   load shed, queue full
    ├── UnavailableError             unavailable         503   actor down, nothing could answer
    │   └── ModelError               model_error         503   the model itself raised on a request
    └── StorageError                 storage_error       503   the storage root cannot be read/written
        └── ArtifactIntegrityError   artifact_integrity  503   a model artifact differs from its
                                                               registered digests, or names a
                                                               factory outside the allow-list

Each error carries a human ``message`` and a structured ``context`` dict (the field, the bad value,
the rule, the file...). Errors pickle with their type and context intact, so they cross Ray actor
and task boundaries; :func:`unwrap_ray_error` turns Ray's wrapper back into the original error.

Example::

    from raymlp.errors import ValidationError
    raise ValidationError("tenure_months must be >= 0", field="tenure_months", value=-3,
                          rule=">= 0")
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RayMLPError",
    "ConfigError",
    "BadRequestError",
    "ValidationError",
    "SchemaError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "OverloadedError",
    "UnavailableError",
    "ModelError",
    "StorageError",
    "ArtifactIntegrityError",
    "unwrap_ray_error",
    "find_raymlp_error",
    "error_for_code",
]


def _rebuild(cls: type[RayMLPError], message: str, context: dict[str, Any]) -> RayMLPError:
    # Bypass __init__ so subclasses with required keyword arguments still unpickle.
    err = cls.__new__(cls)
    RayMLPError.__init__(err, message, **context)
    return err


class RayMLPError(Exception):
    """Root of every raymlp error.

    Args:
        message: one line a person can act on.
        **context: structured facts (``field``, ``value``, ``rule``, ``file``, ``model``...).
    """

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, dict(self.context)))

    def __getattr__(self, name: str) -> Any:
        # context keys read as attributes: err.field, err.value. Guard against recursion
        # while unpickling (context not yet set).
        ctx = self.__dict__.get("context")
        if ctx is not None and name in ctx:
            return ctx[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        ctx = ", ".join(f"{k}={v!r}" for k, v in self.context.items())
        return f"{type(self).__name__}({self.message!r}{', ' if ctx else ''}{ctx})"

    def to_dict(self) -> dict[str, Any]:
        """The error body of the HTTP API: ``{"error": {"code", "message", "details"}}``."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": _jsonable(self.context),
            }
        }


class ConfigError(RayMLPError):
    """A configuration file or object is invalid. Context: ``file``, ``field``, ``reason``."""

    code = "config_error"
    http_status = 400


class BadRequestError(RayMLPError):
    """A request is malformed (bad JSON, missing argument)."""

    code = "bad_request"
    http_status = 400


class ValidationError(RayMLPError):
    """Data breaks a rule. Context: ``field``, ``value``, ``rule``."""

    code = "validation_error"
    http_status = 422


class SchemaError(ValidationError):
    """A dataset does not match the declared schema. Context: ``view``, ``column``, ``rule``."""

    code = "schema_error"


class AuthenticationError(RayMLPError):
    """No API key, or an unknown one."""

    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(RayMLPError):
    """The principal may not do this. Context: ``principal``, ``action``, ``required_role``."""

    code = "permission_denied"
    http_status = 403


class NotFoundError(RayMLPError):
    """Something named does not exist. Context: ``kind``, ``name``."""

    code = "not_found"
    http_status = 404


class ConflictError(RayMLPError):
    """The change conflicts with the current state (lost race, illegal transition, duplicate)."""

    code = "conflict"
    http_status = 409


class OverloadedError(RayMLPError):
    """Load was shed: retry later."""

    code = "overloaded"
    http_status = 429


class UnavailableError(RayMLPError):
    """A platform component is down or nothing could answer."""

    code = "unavailable"
    http_status = 503


class ModelError(UnavailableError):
    """The model itself failed on a request (its forward pass raised), as opposed to the
    infrastructure around it (a replica died, a timeout). Context: ``model``, ``reason``.

    An :class:`UnavailableError`, so callers that handle those still do; its own code lets the
    serving chain attribute the failure to the version that raised it (a canary's own errors
    count against the canary, a dead replica does not).
    """

    code = "model_error"


class StorageError(RayMLPError):
    """The storage root could not be read or written. Context: ``uri``."""

    code = "storage_error"
    http_status = 503


class ArtifactIntegrityError(StorageError):
    """A model artifact is not the one that was registered (a file is missing, extra or changed
    against the digests recorded in the registry), or its ``model.json`` names a factory outside
    ``registry.model_factory_modules``. Context: ``model``, ``version``, ``missing``, ``extra``,
    ``changed``, ``factory``, ``rule``.

    A :class:`StorageError` (not a client error), so the serving chain answers from the fallback.
    """

    code = "artifact_integrity"


_BY_CODE: dict[str, type[RayMLPError]] = {
    cls.code: cls
    for cls in (
        RayMLPError,
        ConfigError,
        BadRequestError,
        ValidationError,
        SchemaError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        OverloadedError,
        UnavailableError,
        ModelError,
        StorageError,
        ArtifactIntegrityError,
    )
}


def error_for_code(code: str) -> type[RayMLPError]:
    """The error class for an API error ``code`` (``RayMLPError`` when unknown)."""
    return _BY_CODE.get(code, RayMLPError)


def unwrap_ray_error(exc: BaseException) -> BaseException:
    """Return the raymlp error inside a Ray task/actor error, or ``exc`` unchanged.

    ``ray.get`` raises ``RayTaskError(Cause)``; callers want the cause itself.
    """
    cause = getattr(exc, "cause", None)
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, RayMLPError):
            return cause
        cause = getattr(cause, "cause", None)
        seen += 1
    return exc


def find_raymlp_error(exc: BaseException) -> RayMLPError | None:
    """The raymlp error behind Ray's and Ray Data's wrappers (``RayTaskError`` ->
    ``UserCodeException`` -> ...), searched through causes and contexts; None if there is none.

    Returns the original error, not Ray's dynamically made ``RayTaskError(SchemaError)``.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        inner = unwrap_ray_error(e)
        if isinstance(inner, RayMLPError) and inner is not e:
            return inner
        if isinstance(e, RayMLPError):
            return e
        todo += [
            inner if inner is not e else None,
            getattr(e, "cause", None),
            e.__cause__,
            e.__context__,
        ]
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
