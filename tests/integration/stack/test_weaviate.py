"""Weaviate from the local stack, through weaviate-client: tenants and hybrid search.

Parley keeps one tenant per user and sends its own embeddings, so the behaviour that
matters is that a hybrid (BM25 + vector) query in one tenant ranks that tenant's objects
and never sees another tenant's, even a better match.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject
from weaviate.classes.tenants import Tenant
from weaviate.collections import Collection

from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration

QUERY_TEXT = "lighthouse keeper"
QUERY_VECTOR = [1.0, 0.0, 0.0, 0.0]

# Alice's objects, best hybrid match first: "both words and the query vector", "one word and
# a vector 45 degrees off", "no word and an orthogonal vector".
ALICE = [
    ("alice-best", "the lighthouse keeper wrote down the storm", [1.0, 0.0, 0.0, 0.0]),
    ("alice-middle", "a lighthouse stands on the coast", [0.7, 0.7, 0.0, 0.0]),
    ("alice-last", "recipes for sourdough bread", [0.0, 0.0, 1.0, 0.0]),
]
# Bob's object would outrank all of Alice's if tenants leaked into each other.
BOB = [
    ("bob-leak", "lighthouse keeper, lighthouse keeper, lighthouse keeper", [1.0, 0.0, 0.0, 0.0]),
]


@pytest.fixture(scope="module")
def client(local_stack: LocalStack) -> Iterator[weaviate.WeaviateClient]:
    local_stack.ensure("weaviate")
    http_host, http_port = local_stack.endpoint("weaviate", "http")
    grpc_host, grpc_port = local_stack.endpoint("weaviate", "grpc")
    # skip_init_checks: the client would otherwise ask the package index for its own newest
    # version on connect; it still reads the server version from /v1/meta.
    connection = weaviate.connect_to_custom(
        http_host=http_host,
        http_port=http_port,
        http_secure=False,
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        grpc_secure=False,
        skip_init_checks=True,
    )
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def notes(client: weaviate.WeaviateClient) -> Iterator[Collection]:
    """A fresh multi-tenant collection with self-provided vectors, deleted afterwards."""
    name = f"TestNote{uuid.uuid4().hex[:8]}"
    collection = client.collections.create(
        name,
        properties=[
            Property(name="key", data_type=DataType.TEXT),
            Property(name="body", data_type=DataType.TEXT),
        ],
        vector_config=Configure.Vectors.self_provided(),
        multi_tenancy_config=Configure.multi_tenancy(enabled=True),
    )
    try:
        yield collection
    finally:
        client.collections.delete(name)


def _insert(collection: Collection, tenant: str, rows: list[tuple[str, str, list[float]]]) -> None:
    result = collection.with_tenant(tenant).data.insert_many(
        [DataObject(properties={"key": key, "body": body}, vector=vector) for key, body, vector in rows]
    )
    assert not result.has_errors, result.errors


def test_hybrid_query_ranks_only_its_own_tenant(notes: Collection) -> None:
    notes.tenants.create([Tenant(name="alice"), Tenant(name="bob")])
    _insert(notes, "alice", ALICE)
    _insert(notes, "bob", BOB)

    result = notes.with_tenant("alice").query.hybrid(
        query=QUERY_TEXT, vector=QUERY_VECTOR, alpha=0.5, limit=10
    )

    assert [o.properties["key"] for o in result.objects] == ["alice-best", "alice-middle", "alice-last"]
