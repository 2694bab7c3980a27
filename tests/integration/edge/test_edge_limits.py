"""The edge's limits, met through the stack's real Envoy in front of the real svc_session
(rate limit service over Redis) and the other services.

svc_session runs its production bucket sizes: 20 sign-in attempts per address (one more
every 5 s), 30 requests per free-tier user (one more every 2 s). Tests that spend an
address's tokens do so from an address of their own (grpc_web.random_loopback), so
127.0.0.1, every other test's address, keeps its tokens; tests that spend a user's tokens
use a user of their own.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Mapping
from urllib.parse import unquote

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from edge_proxy.render import MAX_REQUEST_BYTES
from parley.history.v1 import history_pb2
from parley.session.v1 import session_pb2
from parley_core.errors import details_of
from parley_core.stubs import history_stub, session_stub
from parley_stack.testing import LocalStack
from svc_session.settings import SessionSettings
from tests.integration.edge.grpc_web import Reply, _details, client_from, random_loopback
from tests.integration.session.helpers import register_verified

pytestmark = pytest.mark.integration

_RESET = "/parley.session.v1.SessionService/ResetPassword"
_REFRESH = "/parley.session.v1.SessionService/RefreshToken"
_SHARED = "/parley.history.v1.HistoryService/GetSharedConversation"
_LOGIN = "/parley.session.v1.SessionService/Login"
_CODES = {code.value[0]: code for code in grpc.StatusCode}

Metadata = tuple[tuple[str, str], ...]

#: svc_session's default sign-in address bucket: its capacity and refill per second.
_ADDRESS_CAPACITY, _ADDRESS_REFILL = 20, 0.2
#: svc_session's default anonymous address bucket (RefreshToken, VerifyEmail, shared pages).
_ANONYMOUS = SessionSettings.model_fields["anonymous_address_bucket"].default


def _endpoint(edge: str) -> tuple[str, int]:
    host, port = edge.rsplit(":", 1)
    return host, int(port)


def _post(
    client: httpx.Client,
    edge: str,
    method: str,
    request: Message,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Reply]:
    """A gRPC-Web call that may be answered by the edge itself (HTTP 413/429, the status in
    the headers) or by a service (HTTP 200, the status in a trailer frame or the headers)."""
    body = request.SerializeToString()
    answer = client.post(
        f"http://{edge}{method}",
        content=struct.pack(">BI", 0, len(body)) + body,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **(headers or {})},
    )
    trailers = dict(answer.headers)
    content = answer.content if answer.status_code == 200 else b""
    while content:
        flag, length = struct.unpack(">BI", content[:5])
        frame, content = content[5 : 5 + length], content[5 + length :]
        if flag & 0x80:
            for line in frame.decode().split("\r\n"):
                key, _, value = line.partition(":")
                if key:
                    trailers[key.strip().lower()] = value.strip()
    reply = Reply(
        code=_CODES[int(trailers["grpc-status"])],
        message=unquote(trailers.get("grpc-message", "")),
        details=_details(trailers.get("grpc-status-details-bin", "")),
    )
    return answer.status_code, reply


def _reset(client: httpx.Client, edge: str, headers: Mapping[str, str] | None = None) -> tuple[int, Reply]:
    request = session_pb2.ResetPasswordRequest(reset_token="not-a-token", new_password="a long new password")
    return _post(client, edge, _RESET, request, headers)


def _refused_at_the_edge(status: int, reply: Reply) -> bool:
    """The rate limit filter's refusal: 429, RESOURCE_EXHAUSTED, RATE_LIMITED from the edge."""
    if reply.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    info = reply.error_info()
    assert (status, info.reason, info.domain) == (429, "RATE_LIMITED", "session.parley.dev")
    assert dict(info.metadata) == {"source": "edge"}
    return True


def _exhaust(client: httpx.Client, edge: str) -> list[tuple[int, Reply]]:
    """ResetPassword with a wrong token until the edge refuses one (at most 40 calls)."""
    replies = []
    for _attempt in range(40):
        replies.append(_reset(client, edge))
        if _refused_at_the_edge(*replies[-1]):
            break
    return replies


def test_a_flood_of_password_resets_from_one_address_is_refused_at_the_edge(edge: str) -> None:
    source = random_loopback()
    started = time.monotonic()
    with client_from(source) as client:
        replies = _exhaust(client, edge)
        again = _reset(client, edge)
    elapsed = time.monotonic() - started

    reached = replies[:-1]
    # The service answered the first ones itself (a wrong token), then the edge refused.
    assert {reply.code for _status, reply in reached} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert _ADDRESS_CAPACITY <= len(reached) <= _ADDRESS_CAPACITY + int(elapsed * _ADDRESS_REFILL) + 1
    assert _refused_at_the_edge(*replies[-1])
    assert _refused_at_the_edge(*again)


def test_a_spoofed_client_address_does_not_pick_another_clients_bucket(edge: str) -> None:
    drained, fresh = random_loopback(), random_loopback()
    with client_from(drained) as client:
        assert _refused_at_the_edge(*_exhaust(client, edge)[-1])
        # Naming a fresh address (ours, a header Envoy overwrites, or X-Forwarded-For, which
        # it ignores with no trusted hops) does not get the drained client a new bucket.
        for spoofed in ({"x-parley-client-address": fresh}, {"x-forwarded-for": fresh}):
            assert _refused_at_the_edge(*_reset(client, edge, spoofed)), spoofed
    with client_from(fresh) as client:
        # ... nor does naming the drained address spend the drained bucket for someone else.
        status, reply = _reset(client, edge, {"x-parley-client-address": drained})
    assert (status, reply.code) == (200, grpc.StatusCode.INVALID_ARGUMENT)


def test_a_sign_in_spends_the_address_bucket_once_in_the_service_not_again_at_the_edge(edge: str) -> None:
    # Login takes the address bucket together with the email buckets in svc_session, all or
    # nothing; the edge spends nothing on it. Counted twice, 10 attempts would drain 20 tokens.
    started = time.monotonic()
    replies = []
    with client_from(random_loopback()) as client:
        for _attempt in range(40):
            email = f"guess-{secrets.token_hex(6)}@parley.test"
            login = session_pb2.LoginRequest(
                password=session_pb2.PasswordCredential(email=email, password="not the password")
            )
            replies.append(_post(client, edge, _LOGIN, login))
            if replies[-1][1].code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
    elapsed = time.monotonic() - started

    *wrong, (status, refused) = replies
    assert {reply.code for _status, reply in wrong} == {grpc.StatusCode.UNAUTHENTICATED}
    assert _ADDRESS_CAPACITY <= len(wrong) <= _ADDRESS_CAPACITY + int(elapsed * _ADDRESS_REFILL) + 1
    # Refused by the service, naming the bucket (the edge's refusal says source: edge).
    info = refused.error_info()
    assert (status, refused.code) == (200, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert (info.reason, dict(info.metadata)) == ("RATE_LIMITED", {"bucket": "addr"})


def test_a_flood_of_made_up_refresh_tokens_and_share_links_from_one_address_is_refused_at_the_edge(
    edge: str,
) -> None:
    source, neighbour = random_loopback(), random_loopback()
    started = time.monotonic()
    replies: list[tuple[int, Reply]] = []
    with client_from(source) as client:
        for _attempt in range(_ANONYMOUS.capacity + 200):
            refresh = session_pb2.RefreshTokenRequest(refresh_token=secrets.token_urlsafe(32))
            replies.append(_post(client, edge, _REFRESH, refresh))
            if _refused_at_the_edge(*replies[-1]):
                break
        exhausted_at = time.monotonic()
        elapsed = exhausted_at - started
        # Shared pages spend the same bucket: made-up links from this address are refused too,
        # once the tokens it refilled since (five a second) are spent.
        shared: list[tuple[int, Reply]] = []
        for _attempt in range(20):
            made_up_link = history_pb2.GetSharedConversationRequest(token="made-up")
            shared.append(_post(client, edge, _SHARED, made_up_link))
            if _refused_at_the_edge(*shared[-1]):
                break
        refilled_since = int((time.monotonic() - exhausted_at) * _ANONYMOUS.refill_per_s) + 1
        # The address's sign-in bucket is a different one: a password reset still reaches the service.
        reset = _reset(client, edge)

    reached = replies[:-1]
    # svc_session answered the guesses itself until the edge's bucket ran dry.
    assert {reply.code for _status, reply in reached} == {grpc.StatusCode.UNAUTHENTICATED}
    refilled = int(elapsed * _ANONYMOUS.refill_per_s) + 1
    assert _ANONYMOUS.capacity <= len(reached) <= _ANONYMOUS.capacity + refilled
    assert _refused_at_the_edge(*replies[-1])
    assert _refused_at_the_edge(*shared[-1])
    assert len(shared) - 1 <= refilled_since
    assert {reply.code for _status, reply in shared[:-1]} <= {grpc.StatusCode.NOT_FOUND}
    assert reset[1].code == grpc.StatusCode.INVALID_ARGUMENT
    # Another address (another office behind its own NAT) is not affected.
    with client_from(neighbour) as client:
        made_up = session_pb2.RefreshTokenRequest(refresh_token="made-up")
        status, reply = _post(client, edge, _REFRESH, made_up)
    assert (status, reply.code) == (200, grpc.StatusCode.UNAUTHENTICATED)


async def test_a_users_reads_spend_their_own_bucket_at_the_edge(edge: str, local_stack: LocalStack) -> None:
    async with grpc.aio.insecure_channel(edge) as channel:
        registered = await register_verified(
            session_stub(channel),
            local_stack.config.data_dir("mailbox"),
            f"rl-{secrets.token_hex(5)}@parley.test",
        )
        token = (("authorization", f"Bearer {registered.credentials.access_token}"),)
        history = history_stub(channel)
        answered, refusal = 0, None
        for _attempt in range(60):
            try:
                await history.ListConversations(
                    history_pb2.ListConversationsRequest(parent="users/me"), metadata=token, timeout=5
                )
            except grpc.aio.AioRpcError as error:
                refusal = error
                break
            answered += 1

    # A free-tier user's bucket holds 30 (svc_session's default), and refills by one per 2 s.
    assert 30 <= answered <= 33
    assert refusal is not None
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    [info] = [d for d in details_of(refusal) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert (info.reason, dict(info.metadata)) == ("RATE_LIMITED", {"source": "edge"})
    metadata = dict([*(refusal.initial_metadata() or ()), *(refusal.trailing_metadata() or ())])
    assert int(metadata["retry-after"]) >= 1


@pytest.fixture(scope="module")
async def person(edge: str, local_stack: LocalStack) -> Metadata:
    """One verified account for the tests that spend little: its call metadata."""
    async with grpc.aio.insecure_channel(edge) as channel:
        registered = await register_verified(
            session_stub(channel),
            local_stack.config.data_dir("mailbox"),
            f"edge-size-{secrets.token_hex(5)}@parley.test",
        )
    return (("authorization", f"Bearer {registered.credentials.access_token}"),)


async def test_an_oversized_request_is_refused_whole_with_a_precise_status(
    edge: str, person: Metadata
) -> None:
    token = person
    async with grpc.aio.insecure_channel(edge) as channel:
        history = history_stub(channel)
        big = history_pb2.CreateConversationRequest(
            parent="users/me",
            conversation=history_pb2.Conversation(title="big", system_prompt="x" * MAX_REQUEST_BYTES),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await history.CreateConversation(big, metadata=token, timeout=10)
        with client_from("127.0.0.1") as client:
            web_status, web_reply = _post(
                client, edge, "/parley.history.v1.HistoryService/CreateConversation", big, dict(token)
            )
        listed = await history.ListConversations(
            history_pb2.ListConversationsRequest(parent="users/me"), metadata=token, timeout=5
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == f"the request is larger than the edge's limit of {MAX_REQUEST_BYTES} bytes"
    [info] = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert (info.reason, info.domain) == ("REQUEST_TOO_LARGE", "parley.dev")
    assert dict(info.metadata) == {"source": "edge", "limit_bytes": str(MAX_REQUEST_BYTES)}
    # A browser (gRPC-Web) is told the same, in the headers of an HTTP 413.
    assert (web_status, web_reply.code) == (413, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert web_reply.error_info().reason == "REQUEST_TOO_LARGE"
    # Nothing was created.
    assert list(listed.conversations) == []


async def test_a_request_under_the_size_limit_reaches_the_service(edge: str, person: Metadata) -> None:
    token = person
    async with grpc.aio.insecure_channel(edge) as channel:
        # 900 KiB: under the edge's limit, over svc_history's 16,000 characters for a prompt.
        request = history_pb2.CreateConversationRequest(
            parent="users/me", conversation=history_pb2.Conversation(system_prompt="x" * 900 * 1024)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await history_stub(channel).CreateConversation(request, metadata=token, timeout=10)

    # The service's own verdict on the field, not the edge's on the size.
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [bad] = [d for d in details_of(caught.value) if isinstance(d, error_details_pb2.BadRequest)]
    assert [v.field for v in bad.field_violations] == ["conversation.system_prompt"]
