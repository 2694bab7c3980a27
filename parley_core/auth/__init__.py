"""Authentication every service shares: verify Parley's JWTs, know the caller, check rights.

Access tokens are ES256-signed JWTs issued by svc_session. A service verifies them locally
against svc_session's JWKS (`HttpKeySource`: https, or http to loopback; cached with an
expiry), checks issuer, audience and expiry (`JwtVerifier`, which caches a verified token
until its `exp`), and asks the revocation state (`Revocations`, a local view kept current
from a Redis Stream) on every call, so that a logout, a revoked API key, a disabled
account, a password reset or a role change takes effect at once. Identity comes only from
the verified token and that state: no header a client can set is ever trusted.

`AuthInterceptor` puts it in front of a server's handlers and fails closed: what cannot be
checked is UNAVAILABLE with RetryInfo, never a call let through. Internal methods take a
service token beside the user's (`USER_TOKEN_HEADER`); handlers check it with
`require_service`.
"""

from parley_core.auth._errors import AUTH_BACKEND_UNAVAILABLE, permission_denied, unauthenticated
from parley_core.auth._interceptor import USER_TOKEN_HEADER, AuthInterceptor, bearer_token
from parley_core.auth._keys import HttpKeySource, KeySource, StaticKeySource
from parley_core.auth._principal import (
    USER_SCOPES,
    Principal,
    current_principal,
    require_admin,
    require_scope,
    require_service,
    resolve_user,
)
from parley_core.auth._revocation import Revocations, UserState
from parley_core.auth._service_client import ServiceTokenSource
from parley_core.auth._verifier import ALGORITHMS, JwtVerifier

__all__ = [
    "ALGORITHMS",
    "AUTH_BACKEND_UNAVAILABLE",
    "USER_SCOPES",
    "USER_TOKEN_HEADER",
    "AuthInterceptor",
    "HttpKeySource",
    "JwtVerifier",
    "KeySource",
    "Principal",
    "Revocations",
    "ServiceTokenSource",
    "StaticKeySource",
    "UserState",
    "bearer_token",
    "current_principal",
    "permission_denied",
    "require_admin",
    "require_scope",
    "require_service",
    "resolve_user",
    "unauthenticated",
]
