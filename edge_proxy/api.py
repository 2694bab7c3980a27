"""The public API, method by method: what the edge routes, and what it lets through unsigned.

The edge routes exactly these methods and nothing else, so an internal method
(`HistoryService/AppendMessage`, svc_session's service-token and rate-limit services) or a
method added to a contract later is unreachable from outside until it is listed here.
tests/unit/test_edge_render.py checks this list against the contracts and the services'
own sets of internal and anonymous methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ANONYMOUS", "PUBLIC", "Route"]

#: Which of svc_session's buckets the edge spends on a call (ADR 0017): "token", the
#: caller's own (the user's, sized by tier, or the API key's: the access token names it);
#: "address", the client address's small sign-in bucket; "anonymous", the client address's
#: larger bucket for routine calls without a token; None, none at the edge.
Limit = Literal["token", "address", "anonymous"] | None


@dataclass(frozen=True)
class Route:
    cluster: str
    #: A streaming method: an idle timeout instead of an overall one.
    stream: bool = False
    #: A unary read that changes nothing: retried by the edge on UNAVAILABLE.
    read: bool = False
    #: The bucket the edge's rate limit filter spends one token of. Each request spends a
    #: bucket once: where the service spends it itself (svc_session's own methods, sign-in)
    #: or counts the work in a bucket of its own (svc_router's turns), the edge does not.
    limit: Limit = None
    #: A bidirectional stream: its request body is never buffered, so it has no size limit
    #: at the edge (the service's own message limit applies to each message).
    bidi: bool = False


_SESSION = "/parley.session.v1.SessionService/"
_HISTORY = "/parley.history.v1.HistoryService/"
_CHAT = "/parley.chat.v1.ChatService/"
_LEDGER = "/parley.ledger.v1.LedgerService/"


def _methods(prefix: str, route: Route, names: str) -> dict[str, Route]:
    return {f"{prefix}{name}": route for name in names.split()}


#: Path -> where it goes.
PUBLIC: dict[str, Route] = {
    # svc_session spends the caller's bucket itself on every call with a token, and the
    # sign-in methods (Register, Login, RequestPasswordReset) take the address and email
    # buckets together, all or nothing (ADR 0004): the edge spends nothing on either.
    **_methods(
        _SESSION,
        Route("svc_session"),
        "Register Login Logout RevokeSession RequestPasswordReset CreateApiKey "
        "RevokeApiKey UpdateUser ResendVerificationEmail EndAllSessions",
    ),
    # RefreshToken is every signed-in browser's routine call, and VerifyEmail every sign-up's
    # second step: on the small sign-in address bucket, a crowd behind one NAT would lock
    # itself out, and signing up would cost two attempts. Unlimited, they are free guesses
    # for a flood of made-up tokens, so they take the address's larger anonymous bucket
    # (ADR 0017).
    **_methods(_SESSION, Route("svc_session", limit="anonymous"), "RefreshToken VerifyEmail"),
    # The emailed reset link: rare for a person, what a guesser of reset tokens would flood.
    **_methods(_SESSION, Route("svc_session", limit="address"), "ResetPassword"),
    **_methods(
        _SESSION, Route("svc_session", read=True), "GetCurrentUser ListSessions ListApiKeys ListUsers"
    ),
    # Not AppendMessage: only svc_router appends, from inside the cluster.
    **_methods(
        _HISTORY,
        Route("svc_history", limit="token"),
        "CreateConversation UpdateConversation DeleteConversation CreateShareLink DeleteShareLink "
        "DeleteUserData",
    ),
    # Counts a view: not retried. Anonymous, and one link may be opened by a whole office
    # behind one address: not on the sign-in bucket (svc_history throttles password guesses)
    # but on the address's anonymous one, so made-up links cannot be tried in a flood.
    **_methods(_HISTORY, Route("svc_history", limit="anonymous"), "GetSharedConversation"),
    **_methods(
        _HISTORY,
        Route("svc_history", read=True, limit="token"),
        "GetConversation ListConversations ListMessages SearchMessages ListShareLinks",
    ),
    **_methods(_HISTORY, Route("svc_history", stream=True, limit="token"), "ExportUserData"),
    # Turns: svc_router admits each against the user's turn and model-token buckets; a
    # resumed or cancelled turn must not be refused for the requests around it.
    **_methods(_CHAT, Route("svc_router", stream=True, bidi=True), "Chat"),
    **_methods(_CHAT, Route("svc_router", stream=True), "StreamTurn ResumeTurn"),
    **_methods(_CHAT, Route("svc_router"), "CancelTurn"),
    **_methods(_CHAT, Route("svc_router", read=True, limit="token"), "ListModels"),
    **_methods(_LEDGER, Route("svc_ledger", limit="token"), "SetBudget"),
    **_methods(
        _LEDGER,
        Route("svc_ledger", read=True, limit="token"),
        "GetUsage ListLineItems GetSpendReport GetBudget GetAdminOverview GetSystemHealth",
    ),
}

#: Callable without an access token: signing up and in, password resets, the emailed
#: links, and shared pages. Every other routed method needs a valid one at the edge.
ANONYMOUS = frozenset(
    {
        *(
            f"{_SESSION}{name}"
            for name in ["Register", "Login", "RefreshToken", "RequestPasswordReset", "ResetPassword"]
        ),
        f"{_SESSION}VerifyEmail",
        f"{_HISTORY}GetSharedConversation",
    }
)
