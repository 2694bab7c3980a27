"""The Weaviate collection of messages: one tenant per user, vectors supplied by us.

Every call names the user's tenant, so no query can reach another user's messages.
Tenants are created on first write (auto-tenant creation) and removed whole when the user
is erased. Objects are written by id (`documents.object_id`), so writing a message twice
replaces it with itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.collections import CollectionAsync
from weaviate.exceptions import WeaviateBaseError

from svc_history.search.documents import IndexedMessage
from svc_history.search.embedding import Vector
from svc_history.search.ranking import IndexHit, fuse, ordered, with_ties
from svc_history.settings import SearchSettings

__all__ = ["IndexHit", "IndexUnavailableError", "MessageIndex", "Mode"]

Mode = Literal["full_text", "semantic", "hybrid"]

#: Objects per delete_many call (Weaviate's QUERY_MAXIMUM_RESULTS bounds one call's matches).
_DELETE_ROUNDS = 1000


class IndexUnavailableError(Exception):
    """Weaviate did not answer, or refused a request it should have taken."""


def _properties() -> list[Property]:
    def field(name: str) -> Property:
        return Property(
            name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False
        )

    return [
        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        field("conversation_id"),
        field("message_id"),
        field("author"),
        Property(name="create_time", data_type=DataType.DATE),
    ]


class MessageIndex:
    def __init__(self, settings: SearchSettings) -> None:
        self._settings = settings
        self._client = weaviate.use_async_with_custom(
            http_host=settings.weaviate_host,
            http_port=settings.weaviate_http_port,
            http_secure=False,
            grpc_host=settings.weaviate_host,
            grpc_port=settings.weaviate_grpc_port,
            grpc_secure=False,
            skip_init_checks=True,
            additional_config=weaviate.config.AdditionalConfig(
                timeout=weaviate.config.Timeout(
                    init=settings.call_timeout_s,
                    query=settings.call_timeout_s,
                    insert=settings.call_timeout_s * 6,
                )
            ),
        )
        self._ready = False

    @property
    def name(self) -> str:
        return self._settings.collection

    async def _collection(self) -> CollectionAsync[Any, Any]:
        """The collection, created on first use (connecting first if need be)."""
        try:
            if not self._client.is_connected():
                await self._client.connect()
            if not self._ready:
                if not await self._client.collections.exists(self.name):
                    await self._create()
                self._ready = True
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error
        return self._client.collections.use(self.name)

    async def _create(self) -> None:
        try:
            await self._client.collections.create(
                self.name,
                properties=_properties(),
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                ),
                multi_tenancy_config=Configure.multi_tenancy(
                    enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
                ),
            )
        except WeaviateBaseError:
            # Another replica may have created it meanwhile; anything else fails again below.
            if not await self._client.collections.exists(self.name):
                raise

    async def upsert(self, messages: Sequence[IndexedMessage], vectors: Sequence[Vector]) -> None:
        """Write each message (with its vector) into its user's tenant."""
        collection = await self._collection()
        by_user: dict[str, list[DataObject[dict[str, object], None]]] = {}
        for message, vector in zip(messages, vectors, strict=True):
            by_user.setdefault(message.user_id, []).append(
                DataObject(properties=message.properties(), uuid=message.object_id, vector=vector)
            )
        for user_id, objects in by_user.items():
            try:
                result = await collection.with_tenant(user_id).data.insert_many(objects)
            except WeaviateBaseError as error:
                raise IndexUnavailableError(type(error).__name__) from error
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise IndexUnavailableError(f"objects refused: {first.message[:200]}")

    async def delete_conversation(self, user_id: str, conversation_id: str) -> int:
        """Remove every message of one conversation; how many there were."""
        collection = (await self._collection()).with_tenant(user_id)
        removed = 0
        try:
            if not await self._has_tenant(user_id):
                return 0
            for _ in range(_DELETE_ROUNDS):
                result = await collection.data.delete_many(
                    where=Filter.by_property("conversation_id").equal(conversation_id)
                )
                removed += result.successful
                if result.matches == 0:
                    return removed
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error
        raise IndexUnavailableError("the conversation's objects did not all go")

    async def delete_user(self, user_id: str) -> None:
        """Remove the user's tenant with everything in it."""
        collection = await self._collection()
        try:
            await collection.tenants.remove([user_id])
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error

    async def tenants(self) -> list[str]:
        """Every user with a tenant."""
        collection = await self._collection()
        try:
            return sorted(await collection.tenants.get())
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error

    async def _has_tenant(self, user_id: str) -> bool:
        collection = await self._collection()
        return await collection.tenants.exists(user_id)

    async def remove(self, user_id: str, ids: Sequence[uuid.UUID]) -> None:
        """Remove these objects of a user (a reindex's leftovers)."""
        if not ids:
            return
        collection = (await self._collection()).with_tenant(user_id)
        try:
            await collection.data.delete_many(where=Filter.by_id().contains_any(list(ids)))
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error

    async def search(
        self, user_id: str, mode: Mode, query: str, vector: Vector | None, offset: int, limit: int
    ) -> list[IndexHit]:
        """One page of the user's hits, best first: the top `offset + limit` are fetched
        and ordered here (`_ordered`), and the page cut from them.

        HYBRID is fused here, not by Weaviate's hybrid query: that one drops a word match
        whose vector is beyond `max_vector_distance`, and without the cut-off every message
        of the user is a hit. Here a hit matches by words (BM25) or lies within the
        distance, and the two rankings' top `offset + limit` are fused: each list's scores
        as a share of its best, weighted by `hybrid_alpha` (docs/adr/0015-search.md).
        """
        collection = await self._collection()
        try:
            if not await self._has_tenant(user_id):
                return []  # nothing indexed yet
            tenant = collection.with_tenant(user_id)
            window = offset + limit
            distance = self._settings.max_vector_distance

            async def words() -> list[IndexHit]:
                return await with_ties(lambda n: _bm25(tenant, query, n), window)

            async def meaning() -> list[IndexHit]:
                assert vector is not None
                return await with_ties(lambda n: _near(tenant, vector, distance, n), window)

            if mode == "full_text":
                ranked = await words()
            elif mode == "semantic":
                ranked = await meaning()
            else:
                both = await asyncio.gather(words(), meaning())
                ranked = fuse(*both, self._settings.hybrid_alpha)
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error
        return ordered(ranked)[offset:window]

    async def objects(self, user_id: str) -> AsyncIterator[tuple[uuid.UUID, dict[str, Any], Vector]]:
        """Every object of a user with its properties and vector (reindex, tests)."""
        collection = await self._collection()
        try:
            if not await self._has_tenant(user_id):
                return
            async for found in collection.with_tenant(user_id).iterator(include_vector=True):
                vector = found.vector.get("default", [])
                yield found.uuid, dict(found.properties), list(vector)  # type: ignore[arg-type]
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error

    async def drop(self) -> None:
        """Delete the whole collection (tests, and a retired model's collection)."""
        try:
            if not self._client.is_connected():
                await self._client.connect()
            await self._client.collections.delete(self.name)
        except WeaviateBaseError as error:
            raise IndexUnavailableError(type(error).__name__) from error
        self._ready = False

    async def close(self) -> None:
        await self._client.close()


_RETURNED = ["conversation_id", "message_id", "text"]


def _hit(found: Any, score: float) -> IndexHit:
    p = found.properties
    return IndexHit(str(p["conversation_id"]), str(p["message_id"]), str(p["text"]), score)


async def _bm25(tenant: CollectionAsync[Any, Any], query: str, limit: int) -> list[IndexHit]:
    result = await tenant.query.bm25(
        query, query_properties=["text"], limit=limit,
        return_metadata=MetadataQuery(score=True), return_properties=_RETURNED,
    )  # fmt: skip
    return [_hit(found, float(found.metadata.score or 0.0)) for found in result.objects]


async def _near(
    tenant: CollectionAsync[Any, Any], vector: Vector, distance: float, limit: int
) -> list[IndexHit]:
    """Score: cosine similarity (1 - distance)."""
    result = await tenant.query.near_vector(
        vector, distance=distance, limit=limit,
        return_metadata=MetadataQuery(distance=True), return_properties=_RETURNED,
    )  # fmt: skip
    return [_hit(found, 1.0 - float(found.metadata.distance or 0.0)) for found in result.objects]
