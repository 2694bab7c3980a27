"""The public API, method by method: what the edge routes, and what it lets through unsigned.

The edge routes exactly these methods and nothing else, so an internal method
(`HistoryService/AppendMessage`, svc_session's service-token and rate-limit services) or a
method added to a contract later is unreachable from outside until it is listed here.
tests/unit/test_edge_render.py checks this list against the contracts and the services'
own sets of internal and anonymous methods.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ANONYMOUS", "PUBLIC", "Route"]


@dataclass(frozen=True)
class Route:
    cluster: str
    #: A streaming method: an idle timeout instead of an overall one.
    stream: bool = False
    #: A unary read that changes nothing: retried by the edge on UNAVAILABLE.
    read: bool = False


_SESSION = "/parley.session.v1.SessionService/"
_HISTORY = "/parley.history.v1.HistoryService/"
_CHAT = "/parley.chat.v1.ChatService/"
_LEDGER = "/parley.ledger.v1.LedgerService/"


def _methods(prefix: str, route: Route, names: str) -> dict[str, Route]:
    return {f"{prefix}{name}": route for name in names.split()}


#: Path -> where it goes.
PUBLIC: dict[str, Route] = {
    **_methods(
        _SESSION,
        Route("svc_session"),
        "Register Login RefreshToken Logout RevokeSession RequestPasswordReset ResetPassword CreateApiKey "
        "RevokeApiKey UpdateUser VerifyEmail ResendVerificationEmail EndAllSessions",
    ),
    **_methods(
        _SESSION, Route("svc_session", read=True), "GetCurrentUser ListSessions ListApiKeys ListUsers"
    ),
    # Not AppendMessage: only svc_router appends, from inside the cluster.
    **_methods(
        _HISTORY,
        Route("svc_history"),
        # GetSharedConversation counts a view: not retried.
        "CreateConversation UpdateConversation DeleteConversation CreateShareLink DeleteShareLink "
        "GetSharedConversation DeleteUserData",
    ),
    **_methods(
        _HISTORY,
        Route("svc_history", read=True),
        "GetConversation ListConversations ListMessages SearchMessages ListShareLinks",
    ),
    **_methods(_HISTORY, Route("svc_history", stream=True), "ExportUserData"),
    **_methods(_CHAT, Route("svc_router", stream=True), "Chat StreamTurn ResumeTurn"),
    **_methods(_CHAT, Route("svc_router"), "CancelTurn"),
    **_methods(_CHAT, Route("svc_router", read=True), "ListModels"),
    **_methods(_LEDGER, Route("svc_ledger"), "SetBudget"),
    **_methods(
        _LEDGER,
        Route("svc_ledger", read=True),
        "GetUsage ListLineItems GetSpendReport GetBudget GetAdminOverview",
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
