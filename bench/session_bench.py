"""What authentication adds to a call, and svc_session's Login/s.

Everything is measured in one run on this machine; the JSON printed at the end has:

The auth path (always; needs only the local stack's Redis). A trivial unary RPC served by
the shared server twice: bare, and behind `AuthInterceptor` with a `JwtVerifier` (an ES256
key generated here, a `StaticKeySource`) and `Revocations` on the real Redis with its
follower running, as a service runs it.
- `bare_us`: the call without the interceptor.
- `bare_header_us`: the same, with the same `authorization` headers as the warm calls (not
  checked): what sending a token costs, whoever checks it.
- `cold_us`: behind it, each call with a token never seen before (a new user and session):
  signature and claims verified, revocation state read from Redis.
- `warm_us`: behind it, tokens already verified: the token cache and the local revocation
  view, no Redis round trip.
- `cold_added_us`, `warm_added_us`: the difference to `bare_us`; `*_over_bare`: the ratio.
- `warm_check_us`: `warm_us` minus `bare_header_us`: what the interceptor itself adds on a
  cache hit (the header's transport left out).
- `verify_cold_us`, `verify_warm_us`: `JwtVerifier.verify` in-process, no RPC.
Latencies are medians of sequential calls (means beside them as `*_mean_us`), bare, cold
and warm interleaved in rounds so that drift hits all three alike.

svc_session (with `--logins N`, N > 0; needs Cassandra too): `logins_per_s` (concurrent
password logins, Argon2id dominates), `reset_known_over_unknown` (a password reset request
for a known address over one for an unknown address: 1 when timing tells nothing) and
`session_token_warm_us`, a token issued by the
real svc_session through the same interceptor with svc_session's key ring as key source,
beside `session_bare_us`, the bare call measured in the same rounds (both while
svc_session runs in the same process).

Run: `.venv/bin/python -m bench.session_bench [--logins 0]` (starts what it needs at port
offset 1000, or PARLEY_TEST_PORT_OFFSET, unless PARLEY_TEST_REUSE_STACK=1).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from redis.asyncio import Redis

from parley.session.v1 import session_pb2 as pb
from parley_core.auth import AuthInterceptor, JwtVerifier, KeySource, Revocations, StaticKeySource
from parley_core.logging import configure_logging
from parley_core.server import RunningServer, start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack, stack_config_for_tests

SERVICE = pb.DESCRIPTOR.services_by_name["SessionService"]
PASSWORD = "benchmark passphrase 1"
ISSUER, AUDIENCE = "https://session.parley.bench", "parley"


class _Echo:
    """The cheapest possible handler: the bare call everything is compared to."""

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Any
    ) -> pb.GetCurrentUserResponse:
        return pb.GetCurrentUserResponse(user=pb.User(name="users/bench"))


async def _timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    durations: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        durations.append(time.perf_counter() - started)
    return durations


async def _timed_each(call: Callable[[str], Awaitable[object]], tokens: Sequence[str]) -> list[float]:
    durations: list[float] = []
    for token in tokens:
        started = time.perf_counter()
        await call(token)
        durations.append(time.perf_counter() - started)
    return durations


async def _serve_echo(interceptors: Sequence[grpc.aio.ServerInterceptor]) -> RunningServer:
    async def register(server: grpc.aio.Server) -> list[str]:
        return [add_servicer(server, SERVICE, _Echo())]

    return await start_server(
        ServiceSettings(metrics_port=-1, shutdown_grace_s=1), register, interceptors=interceptors
    )


def _token(key: ECKey) -> str:
    now = time.time()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"bench-{secrets.token_hex(6)}",
        "sid": secrets.token_hex(8),
        "exp": int(now) + 3600,
        "iat": int(now),
        "iat_ms": int(now * 1000),
        "scope": "chat account",
        "role": "user",
        "tier": "free",
    }
    return jwt.encode({"alg": "ES256", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["ES256"])


def _us(durations: Sequence[float]) -> tuple[float, float]:
    """(median, mean) in microseconds."""
    return statistics.median(durations) * 1e6, statistics.fmean(durations) * 1e6


async def auth_path(redis: Redis, calls: int, rounds: int) -> dict[str, float]:
    """Bare vs cold vs warm calls behind the interceptor; see the module docstring."""
    key = ECKey.generate_key("P-256", parameters={"kid": "bench", "use": "sig", "alg": "ES256"})
    keys = StaticKeySource(KeySet([ECKey.import_key(key.as_dict(private=False))]))
    revocations = Revocations(redis, prefix=f"bench:{secrets.token_hex(4)}:")
    await revocations.start()
    per_round = max(calls // rounds, 1)
    cold_tokens = [_token(key) for _ in range(per_round * rounds + 200)]
    warm_tokens = [_token(key) for _ in range(50)]
    verifier = JwtVerifier(keys, ISSUER, AUDIENCE, revocations, cache_size=len(cold_tokens) + 100)
    bare = await _serve_echo([])
    guarded = await _serve_echo([AuthInterceptor(verifier, public_methods=())])
    request = pb.GetCurrentUserRequest()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{bare.port}") as bare_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as guarded_channel,
        ):
            bare_stub, guarded_stub = session_stub(bare_channel), session_stub(guarded_channel)

            async def plain() -> object:
                return await bare_stub.GetCurrentUser(request)

            async def authorized(token: str) -> object:
                metadata = (("authorization", f"Bearer {token}"),)
                return await guarded_stub.GetCurrentUser(request, metadata=metadata)

            async def unchecked(token: str) -> object:
                metadata = (("authorization", f"Bearer {token}"),)
                return await bare_stub.GetCurrentUser(request, metadata=metadata)

            await _timed(plain, 200)  # warm up both servers and channels
            await _timed_each(authorized, cold_tokens[:200])
            await _timed_each(authorized, warm_tokens)
            await _timed_each(unchecked, warm_tokens)
            repeated = (warm_tokens * (per_round // len(warm_tokens) + 1))[:per_round]
            bare_times: list[float] = []
            header_times: list[float] = []
            cold_times: list[float] = []
            warm_times: list[float] = []
            for index in range(rounds):
                fresh = cold_tokens[200 + index * per_round : 200 + (index + 1) * per_round]
                bare_times += await _timed(plain, per_round)
                header_times += await _timed_each(unchecked, repeated)
                cold_times += await _timed_each(authorized, fresh)
                warm_times += await _timed_each(authorized, repeated)
        assert revocations.is_current, "the revocation follower fell behind; the warm numbers are not warm"
        verify_cold = await _timed_each(verifier.verify, [_token(key) for _ in range(per_round)])
        verify_warm = await _timed_each(verifier.verify, (warm_tokens * (calls // 50 + 1))[:calls])
    finally:
        await bare.stop()
        await guarded.stop()
        await revocations.close()
    (bare_p50, bare_mean), (cold_p50, cold_mean), (warm_p50, warm_mean) = (
        _us(bare_times),
        _us(cold_times),
        _us(warm_times),
    )
    header_p50, header_mean = _us(header_times)
    return {
        "calls_each": len(bare_times),
        "bare_us": bare_p50,
        "bare_header_us": header_p50,
        "cold_us": cold_p50,
        "warm_us": warm_p50,
        "cold_added_us": cold_p50 - bare_p50,
        "warm_added_us": warm_p50 - bare_p50,
        "cold_over_bare": cold_p50 / bare_p50,
        "warm_over_bare": warm_p50 / bare_p50,
        "warm_check_us": warm_p50 - header_p50,
        "bare_mean_us": bare_mean,
        "bare_header_mean_us": header_mean,
        "cold_mean_us": cold_mean,
        "warm_mean_us": warm_mean,
        "warm_added_mean_us": warm_mean - bare_mean,
        "warm_check_mean_us": warm_mean - header_mean,
        "verify_cold_us": _us(verify_cold)[0],
        "verify_warm_us": _us(verify_warm)[0],
    }


async def session_path(stack: LocalStack, redis_url: str, logins: int, concurrency: int) -> dict[str, float]:
    """Login/s through svc_session, and a real svc_session token through the interceptor."""
    from pydantic import SecretStr

    from svc_session.app import SessionApp  # only here: the auth path must not need svc_session
    from svc_session.settings import BucketSize, SessionSettings

    stack.ensure("cassandra")
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    settings = SessionSettings(
        cassandra_hosts=[cql_host],
        cassandra_port=cql_port,
        keyspace="parley_bench_kek",
        # A fixed key-encryption key, so the bench keyspace's signing keys unwrap on every run.
        key_encryption_key=SecretStr(base64.urlsafe_b64encode(b"parley-bench-kek".ljust(32, b".")).decode()),
        redis_url=redis_url,
        metrics_port=-1,
        dev_mailbox_dir=Path(tempfile.mkdtemp()),
        auth_address_bucket=BucketSize(capacity=1_000_000, refill_per_s=1_000_000),
        auth_email_bucket=BucketSize(capacity=1_000_000, refill_per_s=1_000_000),
        auth_email_address_bucket=BucketSize(capacity=1_000_000, refill_per_s=1_000_000),
    )
    app = await SessionApp.start(settings)
    results: dict[str, float] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = session_stub(channel)
            emails = [f"bench-{secrets.token_hex(4)}@parley.test" for _ in range(concurrency)]
            registered = [
                await stub.Register(pb.RegisterRequest(email=e, password=PASSWORD, display_name="Bench"))
                for e in emails
            ]
            token = registered[0].credentials.access_token

            async def login_loop(email: str, count: int) -> None:
                for _ in range(count):
                    await stub.Login(
                        pb.LoginRequest(password=pb.PasswordCredential(email=email, password=PASSWORD))
                    )

            started = time.perf_counter()
            await asyncio.gather(*(login_loop(e, logins // concurrency) for e in emails))
            results["logins_per_s"] = (logins // concurrency * concurrency) / (time.perf_counter() - started)

            # Enumeration by timing: a reset request for a known address and for an unknown
            # one, interleaved; the ratio should be 1 within the noise.
            def reset(email: str) -> Callable[[], Awaitable[object]]:
                request = pb.RequestPasswordResetRequest(email=email)
                return lambda: stub.RequestPasswordReset(request)

            known_times: list[float] = []
            unknown_times: list[float] = []
            for _ in range(5):
                known_times += await _timed(reset(emails[1]), 20)
                unknown_times += await _timed(reset(f"nobody-{secrets.token_hex(4)}@parley.test"), 20)
            results["reset_known_us"] = _us(known_times)[0]
            results["reset_unknown_us"] = _us(unknown_times)[0]
            results["reset_known_over_unknown"] = _us(known_times)[0] / _us(unknown_times)[0]

        keys: KeySource = app.keys
        revocations = Revocations(app.redis)
        await revocations.start()
        verifier = JwtVerifier(keys, settings.issuer, settings.audience, revocations)
        bare = await _serve_echo([])
        guarded = await _serve_echo([AuthInterceptor(verifier, public_methods=())])
        try:
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{bare.port}") as bare_channel,
                grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as guarded_channel,
            ):
                bare_stub, guarded_stub = session_stub(bare_channel), session_stub(guarded_channel)
                metadata = (("authorization", f"Bearer {token}"),)
                request = pb.GetCurrentUserRequest()

                async def plain() -> object:
                    return await bare_stub.GetCurrentUser(request)

                async def authorized() -> object:
                    return await guarded_stub.GetCurrentUser(request, metadata=metadata)

                await _timed(plain, 200)
                await _timed(authorized, 200)
                bare_times: list[float] = []
                times: list[float] = []
                for _ in range(5):  # interleaved, as in the auth path
                    bare_times += await _timed(plain, 200)
                    times += await _timed(authorized, 200)
        finally:
            await bare.stop()
            await guarded.stop()
            await revocations.close()
        results["session_bare_us"] = _us(bare_times)[0]
        results["session_token_warm_us"] = _us(times)[0]
    finally:
        await app.stop()
    return results


async def run(calls: int, rounds: int, logins: int, concurrency: int) -> dict[str, float | str]:
    stack = LocalStack(stack_config_for_tests(), reuse=os.environ.get("PARLEY_TEST_REUSE_STACK") == "1")
    try:
        stack.ensure("redis")
        redis_host, redis_port = stack.endpoint("redis", "redis")
        redis = Redis(host=redis_host, port=redis_port, db=1)
        try:
            results: dict[str, float | str] = dict(await auth_path(redis, calls, rounds))
        finally:
            await redis.aclose()
        if logins > 0:
            redis_url = f"redis://{redis_host}:{redis_port}/1"
            try:
                results |= await session_path(stack, redis_url, logins, concurrency)
            except Exception as error:  # svc_session is not this bench's subject; report, keep the rest
                results["session_error"] = f"{type(error).__name__}: {error}"
    finally:
        stack.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000, help="calls of each kind (bare, cold, warm)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    parser.add_argument("--logins", type=int, default=200, help="svc_session logins; 0 skips svc_session")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    configure_logging("console", "warning")  # one log line per RPC would dominate the timing
    results = asyncio.run(run(args.calls, args.rounds, args.logins, args.concurrency))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
