"""Operator commands run out of band, beside the service rather than through its API."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from parley_core.auth import Revocations
from parley_core.cassandra import connect_to
from parley_core.errors import RpcError
from svc_session.app import Domain
from svc_session.keys import KeyEncryptionKey, KeyRing
from svc_session.settings import SessionSettings
from svc_session.store import Stores


async def grant_admin(settings: SessionSettings, email: str) -> int:
    """Make the account with email an admin; prints what happened, returns an exit status.

    The account must have verified its email. The role applies to its next call.
    """
    if settings.key_encryption_key is None:
        print("PARLEY_SESSION_KEY_ENCRYPTION_KEY is not set")
        return 2
    cluster, cql = await asyncio.to_thread(connect_to, settings)
    redis = Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s)
    try:
        stores = await asyncio.to_thread(Stores.open, cql, settings.keyspace, settings.replication_factor)
        kek = KeyEncryptionKey(settings.key_encryption_key.get_secret_value())
        keys = KeyRing(stores.keys, kek, settings.key_rotation_s, settings.access_token_ttl_s)
        domain = Domain.assemble(settings, stores, keys, redis, Revocations(redis))
        try:
            user = await domain.accounts.grant_admin(email)
        except RpcError as error:
            print(f"not granted: {error.message}")
            return 1
        print(f"users/{user.user_id} ({user.email}) is now an admin")
        return 0
    finally:
        await redis.aclose()
        await asyncio.to_thread(cluster.shutdown)
