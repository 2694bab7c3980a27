"""svc_session benchmark: Login/s, and what JWT verification costs relative to a bare call.

Everything is measured in one run on this machine, against the local stack's real
Cassandra and Redis:

- Login/s: concurrent password logins through svc_session (Argon2id dominates).
- verify/bare: the mean latency of a trivial unary RPC behind the auth interceptor (JWT
  signature, claims, revocation lookup in Redis) divided by the same RPC without it.
- verify alone: JwtVerifier.verify in-process, as a fraction of the bare RPC.

Run: `.venv/bin/python -m bench.session_bench` (starts what it needs at port offset 1000
unless PARLEY_TEST_REUSE_STACK=1).
"""

from __future__ import annotations

import argparse
import asyncio
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

from parley.session.v1 import session_pb2 as pb
from parley_core.auth import AuthInterceptor, JwtVerifier
from parley_core.logging import configure_logging
from parley_core.revocation import RedisRevocationList
from parley_core.server import start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack, stack_config_for_tests
from svc_session.app import SessionApp
from svc_session.settings import BucketSize, SessionSettings

SERVICE = pb.DESCRIPTOR.services_by_name["SessionService"]
PASSWORD = "benchmark passphrase 1"


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


async def _serve_echo(interceptors: Sequence[grpc.aio.ServerInterceptor]) -> Any:
    async def register(server: grpc.aio.Server) -> list[str]:
        return [add_servicer(server, SERVICE, _Echo())]

    return await start_server(
        ServiceSettings(metrics_port=-1, shutdown_grace_s=1), register, interceptors=interceptors
    )


async def run(calls: int, logins: int, concurrency: int) -> dict[str, float]:
    stack = LocalStack(stack_config_for_tests(), reuse=os.environ.get("PARLEY_TEST_REUSE_STACK") == "1")
    stack.ensure("cassandra", "redis")
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    settings = SessionSettings(
        cassandra_hosts=[cql_host],
        cassandra_port=cql_port,
        keyspace="parley_bench",
        redis_url=f"redis://{redis_host}:{redis_port}/1",
        metrics_port=-1,
        dev_mailbox_dir=Path(tempfile.mkdtemp()),
        auth_address_bucket=BucketSize(capacity=1_000_000, refill_per_s=1_000_000),
        auth_email_bucket=BucketSize(capacity=1_000_000, refill_per_s=1_000_000),
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

        verifier = JwtVerifier(app.keys, settings.issuer, settings.audience, RedisRevocationList(app.redis))
        bare = await _serve_echo([])
        guarded = await _serve_echo([AuthInterceptor(verifier, public_methods=())])
        try:
            metadata = (("authorization", f"Bearer {token}"),)
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{bare.port}") as bare_channel,
                grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as guarded_channel,
            ):
                bare_stub, guarded_stub = session_stub(bare_channel), session_stub(guarded_channel)
                request = pb.GetCurrentUserRequest()
                await _timed(lambda: bare_stub.GetCurrentUser(request), 200)  # warm up
                await _timed(lambda: guarded_stub.GetCurrentUser(request, metadata=metadata), 200)
                bare_times, guarded_times = [], []
                for _ in range(5):  # interleaved rounds, so drift hits both alike
                    bare_times += await _timed(lambda: bare_stub.GetCurrentUser(request), calls // 5)
                    guarded_times += await _timed(
                        lambda: guarded_stub.GetCurrentUser(request, metadata=metadata), calls // 5
                    )
                verify_times = await _timed(lambda: verifier.verify(token), calls)
        finally:
            await bare.stop()
            await guarded.stop()
        bare_mean = statistics.fmean(bare_times)
        results["bare_call_us"] = bare_mean * 1e6
        results["verified_call_us"] = statistics.fmean(guarded_times) * 1e6
        results["verify_alone_us"] = statistics.fmean(verify_times) * 1e6
        results["verified_over_bare"] = statistics.fmean(guarded_times) / bare_mean
        results["verify_alone_over_bare"] = statistics.fmean(verify_times) / bare_mean
    finally:
        await app.stop()
        stack.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    configure_logging("console", "warning")  # one log line per RPC would dominate the timing
    results = asyncio.run(run(args.calls, args.logins, args.concurrency))
    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
