"""Access tokens: forgeries are refused, keys rotate, the JWKS is served for Envoy."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from parley.session.v1 import session_pb2 as pb
from svc_session.app import JWKS_PATH, SessionApp
from svc_session.keys import KeyEncryptionKey, KeyRing
from tests.integration.session.conftest import TEST_KEK
from tests.integration.session.helpers import PASSWORD, bearer, failure, reason

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = "=" * 4
    return (
        json.loads(base64.urlsafe_b64decode(header + pad)),
        json.loads(base64.urlsafe_b64decode(payload + pad)),
        signature,
    )


@pytest.fixture
async def genuine(stub: SessionServiceAsyncStub, email: str) -> str:
    registered = await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
    return registered.credentials.access_token


async def _refused(stub: SessionServiceAsyncStub, token: str) -> str:
    error = await failure(stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    return reason(error)


async def test_the_genuine_token_works(stub: SessionServiceAsyncStub, genuine: str, email: str) -> None:
    me = await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(genuine))
    assert me.user.email == email


async def test_missing_token_is_unauthenticated(stub: SessionServiceAsyncStub) -> None:
    error = await failure(stub.GetCurrentUser(pb.GetCurrentUserRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_alg_none_is_refused(stub: SessionServiceAsyncStub, genuine: str) -> None:
    header, claims, _ = _parts(genuine)
    forged = f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{_b64(json.dumps(claims).encode())}."
    assert await _refused(stub, forged) == "INVALID_TOKEN"


async def test_hs256_signed_with_the_public_key_is_refused(
    stub: SessionServiceAsyncStub, genuine: str, session_app: SessionApp
) -> None:
    header, claims, _ = _parts(genuine)
    public_jwk = json.dumps(session_app.keys.jwks()["keys"][0]).encode()
    forged = jwt.encode(
        {"alg": "HS256", "kid": header["kid"]}, claims, OctKey.import_key(public_jwk), algorithms=["HS256"]
    )
    assert await _refused(stub, forged) == "INVALID_TOKEN"


async def test_expired_token_is_refused(
    stub: SessionServiceAsyncStub, genuine: str, session_app: SessionApp
) -> None:
    _, claims, _ = _parts(genuine)
    past = int(time.time()) - 3600
    expired = await session_app.keys.sign({**claims, "iat": past - 900, "nbf": past - 900, "exp": past})
    assert await _refused(stub, expired) == "INVALID_TOKEN"


async def test_unknown_kid_is_refused(stub: SessionServiceAsyncStub, genuine: str) -> None:
    _, claims, _ = _parts(genuine)
    stranger = ECKey.generate_key("P-256", parameters={"kid": "not-ours"})
    forged = jwt.encode({"alg": "ES256", "kid": "not-ours"}, claims, stranger, algorithms=["ES256"])
    assert await _refused(stub, forged) == "UNKNOWN_KEY"


async def test_known_kid_with_a_foreign_signature_is_refused(
    stub: SessionServiceAsyncStub, genuine: str
) -> None:
    header, claims, _ = _parts(genuine)
    stranger = ECKey.generate_key("P-256", parameters={"kid": header["kid"]})
    forged = jwt.encode({"alg": "ES256", "kid": header["kid"]}, claims, stranger, algorithms=["ES256"])
    assert await _refused(stub, forged) == "INVALID_TOKEN"


async def test_tampered_payload_is_refused(stub: SessionServiceAsyncStub, genuine: str) -> None:
    _header, claims, signature = _parts(genuine)
    raised = {**claims, "role": "admin"}
    tampered = f"{genuine.split('.')[0]}.{_b64(json.dumps(raised).encode())}.{signature}"
    assert await _refused(stub, tampered) == "INVALID_TOKEN"


@pytest.mark.parametrize("claim", ["iss", "aud"])
async def test_wrong_issuer_or_audience_is_refused(
    stub: SessionServiceAsyncStub, genuine: str, session_app: SessionApp, claim: str
) -> None:
    _, claims, _ = _parts(genuine)
    wrong = await session_app.keys.sign({**claims, claim: "https://evil.example"})
    assert await _refused(stub, wrong) == "INVALID_TOKEN"


async def test_a_new_key_is_published_before_it_signs_anything(
    stub: SessionServiceAsyncStub, genuine: str, session_app: SessionApp
) -> None:
    old_kid = _parts(genuine)[0]["kid"]
    new_kid = await session_app.keys.rotate()
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{session_app.jwks_port}{JWKS_PATH}")
    kids = [key["kid"] for key in reply.json()["keys"]]
    assert kids[0] == new_kid
    assert old_kid in kids
    assert all("d" not in key for key in reply.json()["keys"])  # never a private part
    max_age = session_app.settings.jwks_max_age_s
    assert reply.headers["cache-control"] == f"public, max-age={max_age}"
    # Caches may hold the old JWKS for max_age: until the lead (longer) has passed, tokens
    # are still signed by the old key, and they keep verifying.
    assert session_app.settings.key_publish_lead_s > max_age
    _, claims, _ = _parts(genuine)
    fresh = await session_app.keys.sign(claims)
    assert _parts(fresh)[0]["kid"] == old_kid
    await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(fresh))


async def test_a_rotated_key_signs_once_its_lead_has_passed(session_app: SessionApp) -> None:
    settings = session_app.settings
    ring = KeyRing(
        session_app.stores.keys,
        KeyEncryptionKey(TEST_KEK),
        settings.key_rotation_s,
        settings.access_token_ttl_s,
        publish_lead_s=1,
    )
    await ring.load()
    new_kid = await ring.rotate()
    before = await ring.sign({"sub": "x"})
    await asyncio.sleep(1.2)
    after = await ring.sign({"sub": "x"})

    assert _parts(before)[0]["kid"] != new_kid
    assert _parts(after)[0]["kid"] == new_kid
