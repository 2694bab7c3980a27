"""Who is calling, and the checks a handler makes on it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from parley_core.auth._errors import permission_denied, unauthenticated
from parley_core.errors import FieldViolation, invalid_argument

#: Every right a signed-in person has; API keys carry a subset.
USER_SCOPES = frozenset({"chat", "history.read", "history.write", "usage.read", "account"})


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified token (and the current user state) says."""

    user_id: str
    role: str
    tier: str
    scopes: frozenset[str]
    session_id: str = ""
    api_key_id: str = ""
    #: The token's `exp`, in seconds since the epoch.
    expires_at: int = 0
    #: When the token was issued, in milliseconds since the epoch (`iat_ms`, else `iat`
    #: times 1000; 0 when the token says neither). Compared with a user's `not_before_ms`.
    issued_at_ms: int = 0
    #: The Parley service calling on the user's behalf (an internal method called with a
    #: service token); "" for a call made by the user. See `require_service`.
    service: str = ""

    @property
    def user_name(self) -> str:
        return f"users/{self.user_id}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


_principal: ContextVar[Principal | None] = ContextVar("parley_principal", default=None)


def current_principal() -> Principal:
    """The caller of the RPC being served; UNAUTHENTICATED when the method is public."""
    principal = _principal.get()
    if principal is None:
        raise unauthenticated("this method needs an access token")
    return principal


def require_scope(principal: Principal, scope: str) -> None:
    """PERMISSION_DENIED unless the token carries scope."""
    if scope not in principal.scopes:
        raise permission_denied(f"the token lacks the {scope!r} scope", "MISSING_SCOPE", scope=scope)


def require_admin(principal: Principal) -> None:
    """PERMISSION_DENIED unless the caller is an admin."""
    if not principal.is_admin:
        raise permission_denied("this method is for admins", "ADMIN_ONLY")


def require_service(principal: Principal, *services: str) -> None:
    """PERMISSION_DENIED unless one of services calls (with its service token) for the user."""
    if not principal.service or principal.service not in services:
        raise permission_denied(
            "this method is for Parley's own services", "SERVICE_ONLY", services=",".join(services)
        )


def resolve_user(principal: Principal, name: str, *, field_name: str = "parent") -> str:
    """The user id in a `users/{user}` name (`users/me` is the caller).

    Another user's name is PERMISSION_DENIED before anything is looked up, so an answer
    never reveals whether someone else's resource exists.
    """
    if name in ("users/me", principal.user_name):
        return principal.user_id
    if not name.startswith("users/") or "/" in name[len("users/") :] or name == "users/":
        raise invalid_argument([FieldViolation(field_name, "must be users/{user} or users/me")])
    raise permission_denied("callers may only act on their own resources", "NOT_OWNER")
