"""Access-token verification: signature, `kid`, algorithm, issuer, audience, time, revocation.

A token's signature and claims are checked once; the resulting principal is cached, keyed
by the exact token string, until the token's `exp` (a bounded LRU), because an ES256
verification costs a few hundred microseconds and a client sends the same token on every
call for its whole lifetime. The cache only saves the signature and claims work: every
call, hit or miss, still checks `exp` and asks the revocation state (`Revocations.check`,
a local lookup in the common case), so a logout, a revoked API key, a disabled account or a
role change applies to cached tokens as it does to new ones.

A key withdrawn from the key set stops the cached tokens it signed once the verifier next
sees the key set (on a miss); revocation, not key withdrawal, is the tool for ending
tokens at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, NamedTuple

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from parley_core.auth._errors import unauthenticated
from parley_core.auth._keys import KeySource
from parley_core.auth._principal import Principal
from parley_core.auth._revocation import Revocations

ALGORITHMS = ["ES256"]


class _Verified(NamedTuple):
    principal: Principal
    kid: str


class JwtVerifier:
    """Verifies access tokens (see the module docstring)."""

    def __init__(
        self,
        keys: KeySource,
        issuer: str,
        audience: str,
        revocations: Revocations | None = None,
        leeway_s: int = 30,
        min_refetch_s: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations
        self.leeway_s = leeway_s
        self.min_refetch_s = min_refetch_s
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._last_refetch = -float("inf")
        self._seen_keys: KeySet | None = None
        self._seen_kids: frozenset[str] = frozenset()

    async def verify(self, token: str) -> Principal:
        """The caller a token names, or UNAUTHENTICATED (UNAVAILABLE when a backend is down)."""
        cached = self._cache.get(token)
        if cached is not None and time.time() < cached.principal.expires_at:
            self._cache.move_to_end(token)
            principal = cached.principal
        else:
            if cached is not None:  # past exp: verified afresh (the leeway applies there)
                del self._cache[token]
            principal, kid = await self._verify_signed(token)
            if time.time() < principal.expires_at:
                self._cache[token] = _Verified(principal, kid)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if self.revocations is not None:
            return await self.revocations.check(principal)
        return principal

    async def _verify_signed(self, token: str) -> tuple[Principal, str]:
        try:
            header = jws.extract_compact(token.encode()).protected if token.count(".") == 2 else None
        except (JoseError, ValueError, UnicodeError):
            header = None
        if not header or header.get("alg") not in ALGORITHMS or not header.get("kid"):
            raise unauthenticated("malformed token, or an algorithm that is not accepted", "INVALID_TOKEN")
        kid = str(header["kid"])
        key_set = self._note_keys(await self.keys.key_set(refresh=False))
        if kid not in self._seen_kids:
            now = time.monotonic()
            if now - self._last_refetch >= self.min_refetch_s:
                self._last_refetch = now
                key_set = self._note_keys(await self.keys.key_set(refresh=True))
            if kid not in self._seen_kids:
                raise unauthenticated("the token's signing key is unknown", "UNKNOWN_KEY")
        try:
            decoded = jwt.decode(token, key_set, algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=self.leeway_s,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise unauthenticated(f"invalid access token: {type(error).__name__}", "INVALID_TOKEN") from None
        return _principal_from(decoded.claims), kid

    def _note_keys(self, key_set: KeySet) -> KeySet:
        """Remember the kids of a key set; forget cached tokens signed by a withdrawn key."""
        if key_set is not self._seen_keys:
            kids = frozenset(str(key.kid) for key in key_set.keys if key.kid)
            withdrawn = self._seen_kids - kids
            if withdrawn:
                for token in [t for t, entry in self._cache.items() if entry.kid in withdrawn]:
                    del self._cache[token]
            self._seen_keys, self._seen_kids = key_set, kids
        return key_set


def _principal_from(claims: dict[str, Any]) -> Principal:
    scope = claims.get("scope", "")
    issued_at_ms = claims.get("iat_ms")
    if issued_at_ms is None and claims.get("iat") is not None:
        issued_at_ms = _number(claims["iat"], "iat") * 1000
    if not isinstance(scope, str):
        raise unauthenticated("invalid access token: scope", "INVALID_TOKEN")
    return Principal(
        user_id=str(claims["sub"]),
        role=str(claims.get("role", "user")),
        tier=str(claims.get("tier", "")),
        scopes=frozenset(scope.split()),
        session_id=str(claims.get("sid", "")),
        api_key_id=str(claims.get("akid", "")),
        expires_at=int(_number(claims["exp"], "exp")),
        issued_at_ms=int(_number(issued_at_ms, "iat_ms")) if issued_at_ms is not None else 0,
        service=str(claims.get("svc", "")),
    )


def _number(value: object, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise unauthenticated(f"invalid access token: {name}", "INVALID_TOKEN")
    return value
