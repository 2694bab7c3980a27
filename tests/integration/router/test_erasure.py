"""Erasing a user reaches the router too: the turn logs (which hold the answers' text for an
hour) and idempotency keys are deleted when UserDeleted arrives."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from parley.chat.v1 import chat_pb2 as pb
from parley.history.v1 import history_pb2 as hpb
from svc_router.app import RouterApp
from tests.integration.history.helpers import Person
from tests.integration.router.helpers import collect, send

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def _keys_naming(redis: Redis, *needles: str) -> list[bytes]:
    found: list[bytes] = []
    async for key in redis.scan_iter(match="parley:turn*", count=1000):
        value = key.decode()
        if any(n in value for n in needles):
            found.append(key)
    return found


async def test_deleting_a_users_data_erases_their_turn_logs(
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    router_app: RouterApp,
    alice: Person,
    bob: Person,
) -> None:
    hers = [await send(chat, alice, "remember this"), await send(chat, alice, "and this")]
    his = await send(chat, bob, "mine stays")
    replayed = await collect(chat.ResumeTurn(pb.ResumeTurnRequest(name=hers[0].turn), metadata=alice.md))
    assert replayed.text == "you said: remember this"
    turn_ids = [t.turn.rsplit("/", 1)[1] for t in hers]
    assert await _keys_naming(router_app.data.redis, alice.user_id, *turn_ids)

    await history.DeleteUserData(
        hpb.DeleteUserDataRequest(name="users/me", confirm="users/me"), metadata=alice.md
    )

    deadline = time.monotonic() + 60
    while await _keys_naming(router_app.data.redis, alice.user_id, *turn_ids):
        assert time.monotonic() < deadline, "the router never erased alice's turn logs"
        await asyncio.sleep(0.2)
    # Bob's turn is untouched.
    kept = await collect(chat.ResumeTurn(pb.ResumeTurnRequest(name=his.turn), metadata=bob.md))
    assert kept.text == "you said: mine stays"
