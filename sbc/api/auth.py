"""API-key authentication: ``Authorization: Bearer <key>`` on every request but the public paths.

Two kinds of key:

* **admin**: the configured ``api_admin_key`` (``SBC_API_ADMIN_KEY``), or a key stored in
  ``api_keys`` without a customer. Sees and changes everything.
* **customer**: a key stored in ``api_keys`` for one customer. Sees only that customer's
  resources; another customer's numbers, trunks, applications, calls and CDRs answer 404, exactly
  like ids that do not exist, so a key cannot even learn what other customers have.

Only the SHA-256 of a stored key is kept (the key itself is shown once, at creation). A key is
256 random bits, so a fast hash is enough (nothing to brute-force), and the lookup is one indexed
query. Lookups are cached for :data:`KEY_CACHE_TTL_S`: a key revoked on this node stops working
at once (the cache entry is dropped), one revoked on another node of a cluster within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from sqlalchemy import select

from sbc.store.schema import ApiKeyRow, CustomerRow
from sbc.store.store import Store

#: How long a key lookup (found or not) is trusted before the store is asked again. Short enough
#: that a revocation reaches every node within seconds, long enough that a client making hundreds
#: of requests per second costs one query per key every few seconds.
KEY_CACHE_TTL_S = 5.0
#: Most keys remembered; past this the cache starts over (bounds memory against a flood of
#: requests with random keys).
KEY_CACHE_MAX = 10_000
#: Prefix of generated keys: makes them recognisable to secret scanners and in logs.
KEY_PREFIX = "sbc_"
#: Random bytes in a generated key (256 bits, as for any bearer token meant to be unguessable).
KEY_RANDOM_BYTES = 32
#: Paths reachable without a key: the OpenAPI document and docs page, and the operations
#: endpoints (metrics, liveness, readiness) that scrapers and orchestrators call without secrets.
PUBLIC_PATHS: tuple[str, ...] = ("^/schema", "^/metrics$", "^/healthz$", "^/readyz$")
#: ``WWW-Authenticate`` sent with every 401 (RFC 6750 §3).
WWW_AUTHENTICATE = 'Bearer realm="sbc"'


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an admin (``customer_id`` None) or one customer."""

    customer_id: int | None
    customer: str | None
    key_id: int | None = None  # None for the configured admin key

    @property
    def is_admin(self) -> bool:
        """True for a key that may see and change everything."""
        return self.customer_id is None


def generate_key() -> str:
    """A new random API key (shown to its owner once; only its hash is stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored in ``api_keys.key_sha256``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyResolver:
    """Turns a presented key into a :class:`Principal` (or None), with a short-lived cache."""

    def __init__(self, store: Store, admin_key: str, *, clock: Any = time.monotonic) -> None:
        """``admin_key`` is the configured admin key (must be non-empty)."""
        if not admin_key:
            raise ValueError("an admin key is required")
        self._store = store
        self._admin_digest = hash_key(admin_key)
        self._clock = clock
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def resolve(self, key: str) -> Principal | None:
        """The principal of ``key``, or None when it is unknown or revoked."""
        digest = hash_key(key)
        if hmac.compare_digest(digest, self._admin_digest):
            return Principal(customer_id=None, customer=None)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._lookup(digest)
        if len(self._cache) >= KEY_CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (principal, now + KEY_CACHE_TTL_S)
        return principal

    def forget(self, digest: str | None = None) -> None:
        """Drop one cached lookup (after a revocation) or all of them."""
        if digest is None:
            self._cache.clear()
        else:
            self._cache.pop(digest, None)

    async def _lookup(self, digest: str) -> Principal | None:
        query = (
            select(ApiKeyRow.id, ApiKeyRow.customer_id, CustomerRow.name)
            .outerjoin(CustomerRow, ApiKeyRow.customer_id == CustomerRow.id)
            .where(ApiKeyRow.key_sha256 == digest, ApiKeyRow.revoked_at.is_(None))
        )
        async with self._store.session() as session:
            row = (await session.execute(query)).first()
        if row is None:
            return None
        key_id, customer_id, customer = row
        return Principal(customer_id=customer_id, customer=customer, key_id=key_id)


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates every HTTP request outside ``exclude`` by its bearer key; 401 otherwise."""

    def __init__(self, app: ASGIApp, resolver: KeyResolver, exclude: Sequence[str] = PUBLIC_PATHS) -> None:
        # Only CORS preflights (OPTIONS) pass without a key; litestar's default also lets HEAD
        # through, which would reach GET handlers unauthenticated.
        super().__init__(app=app, exclude=list(exclude), exclude_http_methods=["OPTIONS"])
        self.resolver = resolver

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """Return the caller's principal; raise 401 for a missing, malformed or unknown key."""
        header = connection.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise NotAuthorizedException(
                detail="missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        principal = await self.resolver.resolve(key)
        if principal is None:
            raise NotAuthorizedException(
                detail="unknown or revoked API key",
                headers={"WWW-Authenticate": f'{WWW_AUTHENTICATE}, error="invalid_token"'},
            )
        return AuthenticationResult(user=principal, auth=None)


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """Guard: operator resources (carriers, routes, inventory, keys) need an admin key; 403."""
    user = connection.scope.get("user")  # absent on requests the middleware let through
    if not isinstance(user, Principal) or not user.is_admin:
        raise PermissionDeniedException(detail="an admin API key is required")


__all__ = [
    "KEY_CACHE_TTL_S",
    "PUBLIC_PATHS",
    "BearerAuthMiddleware",
    "KeyResolver",
    "Principal",
    "admin_only",
    "generate_key",
    "hash_key",
]
