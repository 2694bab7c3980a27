"""The signing key ring: ES256 keys in Cassandra, rotated, published as a JWKS.

All replicas of svc_session share the ring through Cassandra. The newest key signs; a key
stays published for `key_rotation_s` plus one access-token lifetime after its successor
appears, so every token it signed still verifies until it expires. The private keys sit in
Cassandra in this implementation; production wraps them with a KMS (docs/adr/0005).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from svc_session.store import SessionStore


class KeyRing:
    """Signs access tokens and serves the public keys (a `parley_core.auth.KeySource`)."""

    def __init__(self, store: SessionStore, rotation_s: int, token_ttl_s: int) -> None:
        self._store = store
        self._rotation = timedelta(seconds=rotation_s)
        self._publish = timedelta(seconds=rotation_s + token_ttl_s + 60)
        self._keys: list[tuple[ECKey, datetime]] = []  # newest first
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the ring from Cassandra, adding a key when the newest is due for rotation."""
        async with self._lock:
            rows = await self._store.recent_signing_keys()
            now = datetime.now(UTC)
            if not rows or now - rows[0][2] >= self._rotation:
                await self._add_key(now)
                rows = await self._store.recent_signing_keys()
            self._keys = [(ECKey.import_key(json.loads(jwk)), created) for _kid, jwk, created in rows]
            self._loaded_at = time.monotonic()

    async def rotate(self) -> str:
        """Add a new signing key now (operators, tests); returns its kid."""
        async with self._lock:
            kid = await self._add_key(datetime.now(UTC))
        await self.load()
        return kid

    async def _add_key(self, now: datetime) -> str:
        kid = f"{now:%Y%m%d}-{secrets.token_hex(4)}"
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})
        await self._store.insert_signing_key(kid, json.dumps(key.as_dict(private=True)), now)
        return kid

    async def _fresh(self) -> None:
        due = not self._keys or datetime.now(UTC) - self._keys[0][1] >= self._rotation
        if due or time.monotonic() - self._loaded_at > 60:
            await self.load()

    async def sign(self, claims: dict[str, Any]) -> str:
        await self._fresh()
        key = self._keys[0][0]
        return jwt.encode({"alg": "ES256", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["ES256"])

    def _published(self) -> list[ECKey]:
        now = datetime.now(UTC)
        newest = self._keys[:1]
        older = [key for key, created in self._keys[1:] if now - created < self._publish]
        return [key for key, _ in newest] + older

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (current and previous keys), as served at /.well-known/jwks.json."""
        return {"keys": [key.as_dict(private=False) for key in self._published()]}

    async def key_set(self, *, refresh: bool) -> KeySet:
        if refresh:
            await self.load()
        else:
            await self._fresh()
        return KeySet([ECKey.import_key(key.as_dict(private=False)) for key in self._published()])
