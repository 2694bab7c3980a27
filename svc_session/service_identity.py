"""Service identity: Parley's own services exchange a credential for a short-lived token.

A service token is a JWT signed by the same key ring as users' tokens but with its own
audience (`internal_audience`), `sub` = `services/{name}` and a `svc` claim, so a user's
token can never pass for a service's nor a service's for a user's (docs/adr/0009).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

import grpc

from parley_core.errors import FieldViolation, RpcError
from svc_session import errors
from svc_session.keys import KeyRing
from svc_session.model import digest, epoch_ms, now
from svc_session.settings import SessionSettings


class ServiceTokens:
    def __init__(self, settings: SessionSettings, keys: KeyRing) -> None:
        self._settings = settings
        self._keys = keys

    async def issue(self, service: str, secret: str) -> tuple[str, datetime]:
        """A token for service when secret is its credential; UNAUTHENTICATED otherwise."""
        if not service or not secret:
            raise errors.bad_request(
                *[FieldViolation(name, "must not be empty") for name, value in
                  (("service", service), ("secret", secret)) if not value]
            )  # fmt: skip
        expected = self._settings.service_credentials.get(service, "")
        # Compared in constant time, and against a dummy for an unknown service.
        if not hmac.compare_digest(digest(secret), expected or digest(secrets.token_hex(16))) or not expected:
            raise RpcError(
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_SERVICE_CREDENTIAL",
                "unknown service or wrong secret",
                errors.DOMAIN,
            )
        return await self.mint(service)

    async def mint(self, service: str) -> tuple[str, datetime]:
        """A token for service, without a credential: for in-process callers (tests)."""
        moment = now()
        expires = moment + timedelta(seconds=self._settings.service_token_ttl_s)
        claims: dict[str, object] = {
            "iss": self._settings.issuer,
            "aud": self._settings.internal_audience,
            "sub": f"services/{service}",
            "svc": service,
            "iat": int(moment.timestamp()),
            "iat_ms": epoch_ms(moment),
            "nbf": int(moment.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_hex(8),
            "scope": "service",
        }
        return await self._keys.sign(claims), expires
