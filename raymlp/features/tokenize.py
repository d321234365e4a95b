"""Tokenization of sensitive data: keyed tokens in place of raw values.

A join key of an entity marked ``sensitive: true``, or a feature marked ``sensitive: true``, is
stored as ``tok_<hex>``: the HMAC-SHA256 of the raw value under the platform's tokenization key.
The same raw value always gives the same token, so joins, point-in-time retrieval and online
lookups work on tokens exactly as on raw values, and callers may still send raw values (they are
tokenized before any read or write). Without the key a token reveals nothing about its value,
and cannot be computed from a guessed value (unlike a plain hash of a card number).

The key (:meth:`Tokenizer.from_config`):

1. ``<storage root>/_platform/tokenize.key`` if it exists (created by an auth-off platform:
   once a key has tokenized data it must stay the key);
2. else derived from the platform secret (``raymlp._private.credentials.PlatformSecret``):
   ``HMAC-SHA256(secret, b"raymlp-tokenize-v1")`` — never the secret itself, so holding the
   tokenization key does not let anyone mint service tokens;
3. else, with auth off, a new random key written to ``_platform/tokenize.key`` (mode 0600).

With auth on and no readable secret there is no key: :class:`~raymlp.errors.AuthenticationError`.

Example::

    tok = Tokenizer(b"k" * 32)
    tok.token("4111-1111-1111-1111")              # 'tok_5e0c...' (64 hex digits)
    tok.tokenize_table(table, ["card_number"])    # the same column, tokens in place
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raymlp._private.credentials import PlatformSecret
from raymlp.config import FeatureView, PlatformConfig
from raymlp.errors import AuthenticationError, StorageError
from raymlp.storage import Storage

__all__ = [
    "KEY_PATH",
    "TOKEN_LABEL",
    "TOKEN_PREFIX",
    "Tokenizer",
    "is_token",
    "sensitive_columns",
    "sensitive_keys",
]

#: Where an auth-off platform keeps its tokenization key, under the storage root.
KEY_PATH = "_platform/tokenize.key"
#: The HMAC label that derives the tokenization key from the platform secret (a distinct label,
#: so the derived key is never the key service tokens are signed with).
TOKEN_LABEL = b"raymlp-tokenize-v1"
TOKEN_PREFIX = "tok_"
_TOKEN_RE = re.compile(r"\Atok_[0-9a-f]{64}\Z")
_CACHE: dict[str, bytes] = {}
_CACHE_LOCK = threading.Lock()


def is_token(value: Any) -> bool:
    """Whether ``value`` already is a token (``tok_`` and 64 lowercase hex digits)."""
    return isinstance(value, str) and _TOKEN_RE.fullmatch(value) is not None


class Tokenizer:
    """Turns raw values into keyed tokens; tokens are left as they are (idempotent), so a
    value tokenized by the SDK and again by the feature store actor stays one token."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("a tokenization key is at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:  # never the key
        return "<Tokenizer>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels to ingestion tasks on the cluster, like the storage options do.
        return (Tokenizer, (self._key,))

    # -- the key --------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: PlatformConfig) -> Tokenizer:
        """The platform's tokenizer (see the module docstring for where the key comes from)."""
        storage = Storage(cfg.storage.root, cfg.storage.options)
        cache_key = storage.uri(KEY_PATH)
        with _CACHE_LOCK:
            key = _CACHE.get(cache_key)
            if key is None:
                key = _load_key(storage, cfg)
                _CACHE[cache_key] = key
        return cls(key)

    # -- tokens ---------------------------------------------------------------------------------

    def token(self, value: Any) -> str:
        """The token of one raw value (a token is returned unchanged)."""
        text = value if isinstance(value, str) else str(value)
        if _TOKEN_RE.fullmatch(text):
            return text
        digest = hmac.digest(self._key, text.encode("utf-8"), "sha256")
        return TOKEN_PREFIX + digest.hex()

    def tokens(self, values: Iterable[Any]) -> list[Any]:
        """Tokens of a list of values (None stays None)."""
        return [None if v is None else self.token(v) for v in values]

    def tokenize_array(self, arr: pa.Array | pa.ChunkedArray) -> pa.Array:
        """A string array of tokens; nulls stay null. Distinct values are tokenized once."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        if not pa.types.is_dictionary(arr.type):
            if not pa.types.is_string(arr.type):
                arr = arr.cast(pa.string())
            arr = pc.dictionary_encode(arr)
        dictionary = arr.dictionary
        if not pa.types.is_string(dictionary.type):
            dictionary = dictionary.cast(pa.string())
        toks = pa.array(self.tokens(dictionary.to_pylist()), pa.string())
        return pc.take(toks, arr.indices)

    def tokenize_table(self, table: pa.Table, columns: Sequence[str]) -> pa.Table:
        """``table`` with ``columns`` (those present) replaced by their tokens."""
        for col in columns:
            i = table.schema.get_field_index(col)
            if i < 0:
                continue
            table = table.set_column(
                i, pa.field(col, pa.string()), self.tokenize_array(table.column(i))
            )
        return table


def sensitive_keys(view: FeatureView, entities: dict[str, Any]) -> list[str]:
    """Join key columns of ``view`` whose entity is sensitive (``entities``: name -> Entity)."""
    out: list[str] = []
    for name in view.entities:
        ent = entities.get(name)
        if ent is not None and getattr(ent, "sensitive", False):
            out.extend(ent.join_keys)
    return out


def sensitive_columns(view: FeatureView, entities: dict[str, Any]) -> list[str]:
    """Every stored column of ``view`` that holds tokens: sensitive join keys and features."""
    return [*sensitive_keys(view, entities), *(f.name for f in view.features if f.sensitive)]


def _load_key(storage: Storage, cfg: PlatformConfig) -> bytes:
    try:
        found = storage.read_bytes(KEY_PATH).strip()
    except StorageError:
        found = b""
    if found:
        return bytes.fromhex(found.decode("ascii"))
    secret = PlatformSecret.load(cfg)
    if secret:
        return hmac.new(secret, TOKEN_LABEL, hashlib.sha256).digest()
    if cfg.auth.enabled:
        raise AuthenticationError(
            "sensitive data cannot be tokenized here: the platform secret is not readable "
            "(rule: the tokenization key derives from the platform secret when auth is on)",
            field="auth.secret_file",
        )
    return _create_key(storage)


def _create_key(storage: Storage) -> bytes:
    """A new random key under the storage root; a key another process wrote first wins."""
    value = secrets.token_bytes(32)
    if storage.is_local:
        path = storage.local_path(KEY_PATH)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(value.hex().encode("ascii"))
        try:
            # A hard link creates the name with its whole content at once, and fails if the
            # name exists: of two processes creating the key together, exactly one wins and
            # nobody ever reads a half-written key.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    else:
        # Object stores have no create-if-absent here: write, then read back what won.
        storage.write_bytes(KEY_PATH, value.hex().encode("ascii"))
    return bytes.fromhex(storage.read_bytes(KEY_PATH).strip().decode("ascii"))
