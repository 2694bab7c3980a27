"""Fixtures every integration test package may use: the public endpoint, the stack's Triton
and a client of it, and Apache Pulsar standalone beside the session stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from tritonclient.grpc.aio import InferenceServerClient

from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, side_stack_offset

#: The side stack's slot for Apache Pulsar (other slots are other tests' Cassandra rings).
APACHE_PULSAR_SLOT = 2


@pytest.fixture(scope="session")
def edge(local_stack: LocalStack) -> str:
    """host:port of the public endpoint (Envoy, with the four services behind it)."""
    local_stack.ensure("envoy")
    host, port = local_stack.endpoint("envoy", "public")
    return f"{host}:{port}"


@pytest.fixture(scope="session")
def triton_grpc(local_stack: LocalStack) -> str:
    """host:port of the stack's Triton gRPC endpoint (Triton started if need be)."""
    local_stack.ensure("triton")
    host, port = local_stack.endpoint("triton", "grpc")
    return f"{host}:{port}"


@pytest.fixture
async def triton(triton_grpc: str) -> AsyncIterator[InferenceServerClient]:
    """A gRPC client of the stack's Triton, closed after the test."""
    client = InferenceServerClient(triton_grpc)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def apache_pulsar() -> Iterator[LocalStack]:
    """Apache Pulsar standalone (it has the admin API pulsar-lite lacks), started once for
    the whole run beside the session stack and stopped at its end. Tests share it: each uses
    topics or subscriptions of its own."""
    config = StackConfig(pulsar="apache", port_offset=side_stack_offset(APACHE_PULSAR_SLOT))
    handle = LocalStack(config, reuse=False)
    try:
        handle.ensure("pulsar")
        yield handle
    finally:
        handle.close()
