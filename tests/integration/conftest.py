"""Fixtures every integration test package may use: the public endpoint, the stack's Triton
and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tritonclient.grpc.aio import InferenceServerClient

from parley_stack.testing import LocalStack


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
