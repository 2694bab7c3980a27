"""Runbook, "Rebuild the search index": a user's lost index comes back with
`parley admin reindex --user USER`, from Cassandra, and finds the same message."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

import grpc
import httpx
import pytest

from parley.history.v1 import history_pb2
from parley_core.stubs import history_stub
from parley_stack.config import REPO_ROOT
from parley_stack.testing import LocalStack
from svc_history.settings import SearchSettings
from tests.integration.monitoring.helpers import Person, eventually, person_at_edge, turn_at_edge

pytestmark = pytest.mark.integration

WORD = "zanzibarquokka"


async def _hits(edge: str, person: Person) -> int:
    async with grpc.aio.insecure_channel(edge) as channel:
        found = await history_stub(channel).SearchMessages(
            history_pb2.SearchMessagesRequest(
                parent="users/me", query=WORD, mode=history_pb2.SEARCH_MODE_FULL_TEXT
            ),
            metadata=person.md,
            timeout=10,
        )
    return len(found.hits)


def _indexed(edge: str, person: Person) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _hits(edge, person) == 2

    return check


async def test_a_lost_tenant_is_rebuilt_by_parley_admin_reindex(local_stack: LocalStack) -> None:
    local_stack.ensure("envoy")
    host, port = local_stack.endpoint("envoy", "public")
    edge = f"{host}:{port}"
    person = await person_at_edge(local_stack, edge)
    await turn_at_edge(edge, person, f"where does the {WORD} live [scripted ttft_ms=10]")
    # The question and the echoed answer both hold the word.
    # (Once a second: the edge lets a user's reads through at a bounded rate.)
    await eventually(_indexed(edge, person), "the indexer to index the turn", timeout_s=60, every_s=1)

    weaviate_host, weaviate_port = local_stack.endpoint("weaviate", "http")
    collection = SearchSettings().collection
    async with httpx.AsyncClient(timeout=10) as client:
        lost = await client.request(
            "DELETE",
            f"http://{weaviate_host}:{weaviate_port}/v1/schema/{collection}/tenants",
            json=[person.user_id],
        )
    assert lost.status_code == 200, lost.text
    assert await _hits(edge, person) == 0

    rebuilt = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley_stack.cli", "admin", "reindex", "--user", person.user_id,
        env={**os.environ, "PARLEY_STACK_PORT_OFFSET": str(local_stack.config.port_offset)},
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(rebuilt.communicate(), 120)
    assert rebuilt.returncode == 0, output.decode()
    assert await _hits(edge, person) == 2
