"""The edge as an attacker meets it: the stack's real Envoy in front of the real services.

Only the public API is routed; every method but the anonymous ones needs a valid access
token at the edge (refused there with the services' own error details); headers only the
edge or a service may set never pass through; internal methods stay unreachable even
with a service's own token.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import grpc
import pytest
from google.rpc import error_details_pb2

from parley.chat.v1 import chat_pb2
from parley.history.v1 import history_pb2
from parley.ledger.v1 import ledger_pb2
from parley.session.v1 import session_pb2, session_pb2_grpc
from parley_core.errors import details_of
from parley_core.stubs import chat_stub, history_stub, ledger_stub, session_stub
from parley_stack.servers.services import service_secret
from parley_stack.testing import LocalStack
from tests.integration.session.helpers import claims_of, forged_token, register_verified

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import ServiceIdentityServiceAsyncStub

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]


async def _person(edge: str, stack: LocalStack) -> tuple[str, Metadata]:
    """A verified account made through the edge: its user id and its call metadata."""
    async with grpc.aio.insecure_channel(edge) as channel:
        registered = await register_verified(
            session_stub(channel),
            stack.config.data_dir("mailbox"),
            f"edge-{secrets.token_hex(5)}@parley.test",
        )
    token = registered.credentials.access_token
    return registered.user.name.removeprefix("users/"), (("authorization", f"Bearer {token}"),)


async def _failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def _identity(channel: grpc.aio.Channel) -> ServiceIdentityServiceAsyncStub:
    return cast("ServiceIdentityServiceAsyncStub", session_pb2_grpc.ServiceIdentityServiceStub(channel))


async def test_a_call_without_a_valid_token_is_refused_at_the_edge_with_error_details(
    edge: str, local_stack: LocalStack
) -> None:
    _, md = await _person(edge, local_stack)
    real = claims_of(md[0][1].removeprefix("Bearer "))
    forged = forged_token({**real, "sub": str(uuid.uuid4())})
    unsigned = ".".join(md[0][1].removeprefix("Bearer ").split(".")[:2]) + "."
    attempts: list[Metadata] = [
        (),
        (("authorization", "Bearer not-a-jwt"),),
        (("authorization", f"Bearer {forged}"),),
        (("authorization", f"Bearer {unsigned}"),),
        (("authorization", md[0][1].removeprefix("Bearer ")),),  # no scheme
    ]
    async with grpc.aio.insecure_channel(edge) as channel:
        calls: dict[str, Callable[[Metadata], Awaitable[object]]] = {
            "ListConversations": lambda m: history_stub(channel).ListConversations(
                history_pb2.ListConversationsRequest(parent="users/me"), metadata=m, timeout=5
            ),
            "GetUsage": lambda m: ledger_stub(channel).GetUsage(
                ledger_pb2.GetUsageRequest(name="users/me"), metadata=m, timeout=5
            ),
            "GetCurrentUser": lambda m: session_stub(channel).GetCurrentUser(
                session_pb2.GetCurrentUserRequest(), metadata=m, timeout=5
            ),
        }
        for method, call in calls.items():
            for metadata in attempts:
                error = await _failure(call(metadata))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (method, metadata)
                [info] = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
                assert (info.reason, info.domain, dict(info.metadata)) == (
                    "UNAUTHENTICATED", "parley.dev", {"source": "edge"},
                ), (method, metadata)  # fmt: skip
        # The real token passes.
        listed = await history_stub(channel).ListConversations(
            history_pb2.ListConversationsRequest(parent="users/me"), metadata=md, timeout=5
        )
        assert list(listed.conversations) == []


async def test_anonymous_methods_need_no_token_and_ignore_a_bad_one(
    edge: str, local_stack: LocalStack
) -> None:
    async with grpc.aio.insecure_channel(edge) as channel:
        session = session_stub(channel)
        bad = (("authorization", "Bearer not-a-jwt"),)
        email = f"anon-{secrets.token_hex(5)}@parley.test"
        registered = await session.Register(
            session_pb2.RegisterRequest(email=email, password="a long enough password", display_name="Anon"),
            metadata=bad,
            timeout=10,
        )
        shared = await _failure(
            history_stub(channel).GetSharedConversation(
                history_pb2.GetSharedConversationRequest(token="no-such-share-token"), metadata=bad, timeout=5
            )
        )
    assert registered.user.email == email
    # The service answered (its own status), not the edge.
    assert shared.code() != grpc.StatusCode.UNAUTHENTICATED


async def test_internal_methods_are_unreachable_even_with_a_service_s_own_token(
    edge: str, local_stack: LocalStack
) -> None:
    user_id, md = await _person(edge, local_stack)
    host, port = local_stack.endpoint("svc_session", "internal")
    async with grpc.aio.insecure_channel(f"{host}:{port}") as internal:
        identity = _identity(internal)
        issued = await identity.IssueServiceToken(
            session_pb2.IssueServiceTokenRequest(
                service="svc_router", secret=service_secret(local_stack.config, "svc_router")
            ),
            timeout=5,
        )
    router = (("authorization", f"Bearer {issued.access_token}"), ("x-parley-user-token", md[0][1][7:]))
    async with grpc.aio.insecure_channel(edge) as channel:
        history = history_stub(channel)
        conversation = (
            await history.CreateConversation(
                history_pb2.CreateConversationRequest(
                    parent="users/me", conversation=history_pb2.Conversation()
                ),
                metadata=md,
            )
        ).conversation
        append = history_pb2.AppendMessageRequest(
            parent=conversation.name,
            message=history_pb2.Message(
                name=f"{conversation.name}/messages/{uuid.uuid1()}",
                author=history_pb2.AUTHOR_USER,
                text="forged",
            ),
        )
        for metadata in (router, md, ()):
            error = await _failure(history.AppendMessage(append, metadata=metadata, timeout=5))
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED, metadata
        identity_via_edge = _identity(channel)
        error = await _failure(
            identity_via_edge.IssueServiceToken(
                session_pb2.IssueServiceTokenRequest(service="svc_router", secret="guess"), timeout=5
            )
        )
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        messages = await history.ListMessages(
            history_pb2.ListMessagesRequest(parent=conversation.name), metadata=md
        )
    assert list(messages.messages) == []
    assert user_id in conversation.name


async def test_a_client_s_own_user_token_header_never_reaches_a_service(
    edge: str, local_stack: LocalStack
) -> None:
    alice_id, alice = await _person(edge, local_stack)
    bob_id, bob = await _person(edge, local_stack)
    smuggled = (*alice, ("x-parley-user-token", bob[0][1].removeprefix("Bearer ")))
    host, port = local_stack.endpoint("svc_history", "grpc")
    request = history_pb2.ListConversationsRequest(parent="users/me")

    async with grpc.aio.insecure_channel(edge) as channel:
        through_edge = await history_stub(channel).ListConversations(request, metadata=smuggled, timeout=5)
        me = await session_stub(channel).GetCurrentUser(
            session_pb2.GetCurrentUserRequest(), metadata=smuggled
        )
    async with grpc.aio.insecure_channel(f"{host}:{port}") as direct:
        refused = await _failure(
            history_stub(direct).ListConversations(request, metadata=smuggled, timeout=5)
        )

    # Through the edge the header is gone: Alice is Alice, and sees her own (empty) list.
    assert me.user.name == f"users/{alice_id}"
    assert list(through_edge.conversations) == []
    # Straight at the service, the same header with a user's token as bearer is refused.
    assert refused.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert bob_id != alice_id


async def test_the_chat_stream_and_models_still_work_through_the_edge(
    edge: str, local_stack: LocalStack
) -> None:
    _, md = await _person(edge, local_stack)
    async with grpc.aio.insecure_channel(edge) as channel:
        models = await chat_stub(channel).ListModels(chat_pb2.ListModelsRequest(), metadata=md, timeout=10)
        refused = await _failure(chat_stub(channel).ListModels(chat_pb2.ListModelsRequest(), timeout=10))
    assert len(models.models) >= 1
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
