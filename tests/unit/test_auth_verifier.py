"""JwtVerifier: a verified token is cached until its exp, and everything else still runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import grpc
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey

from parley_core.auth import JwtVerifier, Principal, Revocations
from parley_core.errors import RpcError

ISSUER, AUDIENCE = "https://session.parley.test", "parley"


def _key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})


def _public(*keys: ECKey) -> KeySet:
    return KeySet([ECKey.import_key(k.as_dict(private=False)) for k in keys])


KEY = _key("k1")


def sign(key: ECKey = KEY, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u1",
        "exp": now + 600,
        "iat": now,
        "scope": "chat account",
        "sid": "s1",
        "role": "user",
        "tier": "free",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": "ES256", "typ": "JWT", "kid": key.kid}, body, key, algorithms=["ES256"])


class CountingKeys:
    """A KeySource that counts how often it is asked."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.calls = 0

    async def key_set(self, *, refresh: bool) -> KeySet:
        self.calls += 1
        return self.keys


class FakeRevocations:
    """Stands in for Revocations: counts checks, refuses when told to."""

    def __init__(self) -> None:
        self.checked: list[Principal] = []
        self.refuse: RpcError | None = None

    async def check(self, principal: Principal) -> Principal:
        self.checked.append(principal)
        if self.refuse is not None:
            raise self.refuse
        return principal


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token whose signature the verifier checks."""
    seen: list[str] = []
    original = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)  # the module object the verifier calls through
    return seen


async def test_a_cached_token_skips_the_signature_check_and_gives_the_same_principal(
    decodes: list[str],
) -> None:
    keys = CountingKeys(_public(KEY))
    verifier = JwtVerifier(keys, ISSUER, AUDIENCE)
    token = sign()

    first = await verifier.verify(token)
    second = await verifier.verify(token)

    assert second is first
    assert (first.user_id, first.session_id, first.scopes) == ("u1", "s1", frozenset({"chat", "account"}))
    assert decodes == [token]
    assert keys.calls == 1


async def test_a_token_past_its_exp_is_never_served_from_the_cache(decodes: list[str]) -> None:
    exp = int(time.time()) + 2
    token = sign(exp=exp)
    strict = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE, leeway_s=0)
    lenient = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE, leeway_s=30)
    await strict.verify(token)
    await lenient.verify(token)
    await asyncio.sleep(exp + 0.05 - time.time())

    with pytest.raises(RpcError) as refused:
        await strict.verify(token)
    again = await lenient.verify(token)  # within the leeway: verified afresh, not cached

    assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
    assert again.expires_at == exp
    assert decodes == [token] * 4


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used(decodes: list[str]) -> None:
    verifier = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE, cache_size=2)
    a, b, c = (sign(sub=user) for user in ("a", "b", "c"))

    for token in (a, b, a, c, a, b):  # c pushes b out (a was used last); b pushes c out
        await verifier.verify(token)

    assert decodes == [a, b, c, b]


async def test_revocations_are_asked_on_every_call_cache_hit_or_not() -> None:
    revocations = FakeRevocations()
    verifier = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE, cast(Revocations, revocations))
    token = sign()
    for _ in range(3):
        await verifier.verify(token)
    revocations.refuse = RpcError(grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED", "ended")

    with pytest.raises(RpcError) as refused:
        await verifier.verify(token)

    assert refused.value.reason == "SESSION_REVOKED"
    assert len(revocations.checked) == 4
    assert {p.session_id for p in revocations.checked} == {"s1"}


async def test_the_principal_revocations_return_is_the_one_the_caller_gets() -> None:
    class Promote(FakeRevocations):
        async def check(self, principal: Principal) -> Principal:
            return Principal(principal.user_id, "admin", "pro", principal.scopes)

    verifier = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE, cast(Revocations, Promote()))

    principal = await verifier.verify(sign())

    assert (principal.role, principal.tier, principal.is_admin) == ("admin", "pro", True)


@pytest.mark.parametrize(
    ("claims", "issued_at_ms"),
    [
        ({"iat_ms": 1_700_000_000_123, "iat": 1_700_000_000}, 1_700_000_000_123),
        ({"iat": 1_700_000_000}, 1_700_000_000_000),
        ({"iat": None}, 0),
    ],
)
async def test_issued_at_ms_comes_from_iat_ms_else_iat(claims: dict[str, Any], issued_at_ms: int) -> None:
    verifier = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE)

    principal = await verifier.verify(sign(**claims))

    assert principal.issued_at_ms == issued_at_ms


async def test_a_non_numeric_iat_ms_is_an_invalid_token() -> None:
    verifier = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE)

    with pytest.raises(RpcError) as refused:
        await verifier.verify(sign(iat_ms="soon"))

    assert refused.value.reason == "INVALID_TOKEN"


async def test_a_key_withdrawn_from_the_key_set_ends_its_cached_tokens(decodes: list[str]) -> None:
    old, new = KEY, _key("k2")
    keys = CountingKeys(_public(old, new))
    verifier = JwtVerifier(keys, ISSUER, AUDIENCE)
    by_old = sign(old)
    await verifier.verify(by_old)
    keys.keys = _public(new)  # old withdrawn

    await verifier.verify(sign(new))  # a miss: the verifier sees the new key set
    with pytest.raises(RpcError) as refused:
        await verifier.verify(by_old)

    assert refused.value.reason == "UNKNOWN_KEY"


@pytest.mark.parametrize(
    "token",
    [
        sign(aud="someone-else"),
        sign(iss="https://evil.test"),
        sign(_key("k1")),  # the right kid, the wrong key
        "not.a.token",
        jwt.encode(
            {"alg": "HS256", "kid": "k1"},
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "exp": int(time.time()) + 600},
            OctKey.import_key("secret" * 8),
            algorithms=["HS256"],
        ),
    ],
    ids=["audience", "issuer", "signature", "garbage", "hs256"],
)
async def test_bad_tokens_are_invalid_and_never_cached(token: str) -> None:
    verifier = JwtVerifier(CountingKeys(_public(KEY)), ISSUER, AUDIENCE)

    for _ in range(2):
        with pytest.raises(RpcError) as refused:
            await verifier.verify(token)
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_TOKEN",
        )
