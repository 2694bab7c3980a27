"""An Envoy of a test's own, rendered from the local stack's edge inputs with some service
clusters pointed elsewhere (a host that is down beside the real one, say), so a test can
take a service away from the edge without stopping it for every other test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from edge_proxy.render import Address, Upstream, render
from parley_stack.servers.envoy import EnvoyServer, local_edge_inputs
from parley_stack.testing import LocalStack


def closed_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class OwnEdge:
    #: host:port of the public listener (native gRPC and gRPC-Web).
    public: str
    #: Base URL of the internal listener (the clusters' health).
    internal: str


@contextlib.asynccontextmanager
async def own_edge(stack: LocalStack, log: Path, **upstreams: Upstream) -> AsyncIterator[OwnEdge]:
    """An Envoy rendered from the stack's edge inputs with these service clusters replaced,
    on ports of its own (its log at log, its configuration beside it)."""
    host = "127.0.0.1"
    listen, admin, internal = (Address(host, closed_port()) for _ in range(3))
    inputs = replace(local_edge_inputs(stack.config), listen=listen, admin=admin, internal=internal)
    config = log.with_suffix(".yaml")
    config.write_text(render(replace(inputs, **upstreams)))  # type: ignore[arg-type]
    argv = [
        str(EnvoyServer(stack.config).binary), "--config-path", str(config),
        "--base-id", str(admin.port), "--disable-hot-restart", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=asyncio.subprocess.STDOUT)
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 60
            while True:
                if process.returncode is not None:
                    tail = await asyncio.to_thread(log.read_text)
                    raise AssertionError(f"the test's Envoy exited: {tail[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://{host}:{admin.port}/ready", timeout=1)).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the test's Envoy never became ready"
                await asyncio.sleep(0.2)
        yield OwnEdge(public=f"{host}:{listen.port}", internal=f"http://{host}:{internal.port}")
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
