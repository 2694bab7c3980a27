"""Erasing an account when its owner asks history to delete everything (docs/adr/0009).

svc_history's DeleteUserData publishes `UserDeleted`; svc_session consumes it and removes
every row it holds of the user: the account, its email claim and directory entry,
sessions, refresh tokens, API keys (and their digest lookups and request ids), email
proofs and queued mail. Access ends first: every session and key is revoked in the shared
revocation state, so no token of the user works while the rows go. The erasure is
idempotent and resumable: a redelivered event, or one that arrives after a crash half-way,
finds what is left and removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from svc_session.sessions import Sessions
from svc_session.store import Stores

_log = structlog.get_logger("svc_session.erasure")


@dataclass(frozen=True)
class ErasedAccount:
    sessions_and_tokens: int
    api_keys: int
    proofs_and_mail: int


class AccountErasure:
    def __init__(self, stores: Stores, sessions: Sessions) -> None:
        self._stores = stores
        self._sessions = sessions

    async def erase(self, user_id: str) -> ErasedAccount:
        stores = self._stores
        user = await stores.users.get(user_id)
        email = user.email if user is not None else ""
        for session in await stores.sessions.list_sessions(user_id):
            await self._sessions.revoke(user_id, session.session_id)
        for key in await stores.api_keys.list(user_id):
            await self._sessions.revoke_tokens_of_key(key.key_id)
        proofs = await stores.proofs.erase_user(user_id, email)
        keys = await stores.api_keys.erase_user(user_id)
        sessions = await stores.sessions.erase_user(user_id)
        await stores.users.erase(user_id, email)
        _log.info("account erased", user_id=user_id)
        return ErasedAccount(sessions, keys, proofs)
