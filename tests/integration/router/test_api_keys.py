"""A partner's API key that may only chat runs turns (the router reads and writes the turn's
history for it), yet still cannot read history itself."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest

from parley.history.v1 import history_pb2 as hpb
from parley.session.v1 import session_pb2
from parley_core.stubs import session_stub
from svc_session.app import SessionApp
from tests.integration.history.helpers import Person
from tests.integration.router.helpers import send

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def _key_token(session_app: SessionApp, person: Person, scopes: list[str]) -> Person:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as channel:
        stub = session_stub(channel)
        created = await stub.CreateApiKey(
            session_pb2.CreateApiKeyRequest(
                parent="users/me",
                api_key=session_pb2.ApiKey(display_name="partner", scopes=scopes),
                request_id=str(uuid.uuid4()),
            ),
            metadata=person.md,
        )
        login = await stub.Login(session_pb2.LoginRequest(api_key=created.key))
    return Person(person.user_id, login.credentials.access_token, person.router_token)


async def test_a_chat_only_key_runs_turns_but_cannot_read_history_itself(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, session_app: SessionApp, alice: Person
) -> None:
    partner = await _key_token(session_app, alice, ["chat"])

    first = await send(chat, partner, "hello from a partner")
    second = await send(chat, partner, "and again", first.conversation)

    assert second.text == "you said: hello from a partner | and again"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await history.ListMessages(hpb.ListMessagesRequest(parent=first.conversation), metadata=partner.md)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_key_without_the_chat_scope_cannot_run_a_turn(
    chat: ChatServiceAsyncStub, session_app: SessionApp, alice: Person
) -> None:
    reader = await _key_token(session_app, alice, ["history.read"])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send(chat, reader, "may I?")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
