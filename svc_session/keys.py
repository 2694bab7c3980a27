"""The signing key ring: ES256 keys in Cassandra, wrapped at rest, rotated, published as a
JWKS before they sign.

All replicas of svc_session share the ring through Cassandra. Each private key is stored
wrapped with AES-256-GCM under the key-encryption key (KEK) from settings, with its kid as
associated data, so the table alone signs nothing and a row cannot be moved to another kid
(docs/adr/0006; production keeps the KEK in a KMS-backed secret).

A new key is published `publish_lead_s` before it signs anything, so every JWKS cache
(Envoy's, the other services') already holds it when the first token signed by it
arrives. The newest key whose activation time has come signs; a key stays published for
`rotation_s` plus one access-token lifetime after its successor appears, so every token it
signed still verifies until it expires.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from svc_session.store import SigningKeyStore, StoredKey


class KeyEncryptionKey:
    """AES-256-GCM wrapping of signing keys; its id is a fingerprint, never the key."""

    def __init__(self, encoded: str) -> None:
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("the key-encryption key must be 32 bytes, base64url-encoded")
        self._aead = AESGCM(raw)
        self.kek_id = hashlib.sha256(b"parley-kek-id" + raw).hexdigest()[:16]

    @staticmethod
    def generate() -> str:
        """A new KEK, encoded as settings expect it."""
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")

    def wrap(self, kid: str, secret: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret, kid.encode())

    def unwrap(self, kid: str, wrapped: bytes, kek_id: str) -> bytes:
        if kek_id != self.kek_id:
            raise KeyRingError(f"signing key {kid} is wrapped by another key-encryption key ({kek_id})")
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], kid.encode())
        except InvalidTag:
            raise KeyRingError(f"signing key {kid} does not unwrap: tampered or a wrong KEK") from None


class KeyRingError(Exception):
    """The ring cannot be used (no KEK, a key wrapped by another KEK, a tampered row)."""


class KeyRing:
    """Signs access tokens and serves the public keys (a `parley_core.auth.KeySource`)."""

    def __init__(
        self,
        store: SigningKeyStore,
        kek: KeyEncryptionKey,
        rotation_s: int,
        token_ttl_s: int,
        publish_lead_s: int = 0,
    ) -> None:
        self._store = store
        self._kek = kek
        self._rotation = timedelta(seconds=rotation_s)
        self._lead = timedelta(seconds=publish_lead_s)
        self._publish = timedelta(seconds=rotation_s + publish_lead_s + token_ttl_s + 60)
        self._keys: list[tuple[ECKey, StoredKey]] = []  # newest first
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the ring from Cassandra, adding a key when the newest is due for rotation."""
        async with self._lock:
            rows = await self._store.recent()
            now = datetime.now(UTC)
            if not rows:
                # The very first key: nothing can have cached a JWKS yet, so it signs at once.
                await self._add_key(now, lead=timedelta(0))
                rows = await self._store.recent()
            elif now - rows[0].create_time >= self._rotation:
                await self._add_key(now, lead=self._lead)
                rows = await self._store.recent()
            self._keys = [(self._import(row), row) for row in rows]
            self._loaded_at = time.monotonic()

    def _import(self, row: StoredKey) -> ECKey:
        secret = self._kek.unwrap(row.kid, row.wrapped, row.kek_id)
        return ECKey.import_key(json.loads(secret))

    async def rotate(self) -> str:
        """Add a new signing key now (operators, tests); it signs after the publish lead."""
        async with self._lock:
            kid = await self._add_key(datetime.now(UTC), lead=self._lead)
        await self.load()
        return kid

    async def _add_key(self, now: datetime, *, lead: timedelta) -> str:
        kid = f"{now:%Y%m%d}-{secrets.token_hex(4)}"
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})
        wrapped = self._kek.wrap(kid, json.dumps(key.as_dict(private=True)).encode())
        await self._store.insert(StoredKey(kid, now, now + lead, wrapped, self._kek.kek_id))
        return kid

    async def _fresh(self) -> None:
        due = not self._keys or datetime.now(UTC) - self._keys[0][1].create_time >= self._rotation
        if due or time.monotonic() - self._loaded_at > 60:
            await self.load()

    def signing_key(self) -> ECKey:
        """The newest key whose activation time has come."""
        now = datetime.now(UTC)
        for key, row in self._keys:
            if row.activate_time <= now:
                return key
        return self._keys[-1][0]  # only pending keys (a clock step back): the oldest

    def signing_key_age_s(self) -> float:
        """Seconds since the key that signs now was created (0 before the ring is loaded):
        a ring that stops rotating shows as an age past `rotation_s`."""
        now = datetime.now(UTC)
        for _key, row in self._keys:
            if row.activate_time <= now:
                return max(0.0, (now - row.create_time).total_seconds())
        return 0.0

    async def sign(self, claims: dict[str, Any]) -> str:
        await self._fresh()
        key = self.signing_key()
        return jwt.encode({"alg": "ES256", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["ES256"])

    def _published(self) -> list[ECKey]:
        now = datetime.now(UTC)
        active = self.signing_key()
        return [
            key
            for key, row in self._keys
            if key is active or row.activate_time > now or now - row.create_time < self._publish
        ]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (pending, current and previous keys), as served for verifiers."""
        return {"keys": [key.as_dict(private=False) for key in self._published()]}

    async def key_set(self, *, refresh: bool) -> KeySet:
        if refresh:
            await self.load()
        else:
            await self._fresh()
        return KeySet([ECKey.import_key(key.as_dict(private=False)) for key in self._published()])
