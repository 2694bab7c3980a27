"""Rebuild the index from Cassandra: one user's messages, or everyone's.

For each user: every message of every conversation is written again (embedded on Triton,
same ids, same properties as the indexer writes), then objects of the user that Cassandra
no longer has are removed. So a rebuild over a lost index, an index built by an older
model, or one that is merely behind, ends equal to what the indexer would have built.
Chat goes on meanwhile: the indexer keeps writing, and both write the same objects.

A run over everyone goes in Cassandra's token order and records, after each user, the
token it finished (`search_reindex`, by run name); started again with the same name, it
resumes after that user. At the end, tenants of users who no longer have conversations
are removed too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from svc_history.search.documents import IndexedMessage
from svc_history.search.embedding import Embedder
from svc_history.search.index import MessageIndex
from svc_history.settings import HistorySettings
from svc_history.store import ReindexRun, Stores
from svc_history.tree import Tree

__all__ = ["Rebuilt", "Reindex", "main"]

#: Messages embedded and written per step.
_CHUNK = 64
#: Users read per query while walking everyone.
_USERS_PER_PAGE = 100


@dataclass(frozen=True)
class Rebuilt:
    messages: int
    #: Objects the index had that Cassandra does not (removed).
    removed: int


class Reindex:
    def __init__(
        self, stores: Stores, index: MessageIndex, embedder: Embedder, *, embed_timeout_s: float = 120.0
    ) -> None:
        self._timeout_s = embed_timeout_s
        self._stores = stores
        self._index = index
        self._embedder = embedder

    async def count(self, user_id: str) -> int:
        """How many messages the user has (the progress bar's total)."""
        ids = await self._stores.conversations.ids_of(user_id)
        return sum(await asyncio.gather(*(self._stores.messages.count(c) for c in ids)))

    async def user(self, user_id: str, advance: Callable[[int], None] = lambda _: None) -> Rebuilt:
        """Rebuild one user's objects; `advance(n)` after each n messages written."""
        written: set[uuid.UUID] = set()
        conversations = sorted(await self._stores.conversations.ids_of(user_id))
        for conversation_id in conversations:
            tree = Tree(await self._stores.messages.nodes(conversation_id))
            ordered = tree.in_time_order()
            for start in range(0, len(ordered), _CHUNK):
                ids = ordered[start : start + _CHUNK]
                found = await self._stores.messages.get_many(
                    conversation_id, [(tree.node(i).bucket, i) for i in ids]
                )
                batch = [
                    IndexedMessage.of(found[i])
                    for i in ids
                    if i in found and found[i].user_id == user_id
                ]  # fmt: skip
                batch = [m for m in batch if m.indexable]
                if batch:
                    vectors = await self._embedder.embed([m.text for m in batch], timeout_s=self._timeout_s)
                    await self._index.upsert(batch, vectors)
                    written.update(m.object_id for m in batch)
                advance(len(batch))
        stale = [
            object_id async for object_id, _, _ in self._index.objects(user_id) if object_id not in written
        ]
        for start in range(0, len(stale), 500):
            await self._index.remove(user_id, stale[start : start + 500])
        if not conversations:
            await self._index.delete_user(user_id)
        return Rebuilt(len(written), len(stale))

    async def everyone(
        self, run: str, advance: Callable[[str, int], None] = lambda _u, _n: None
    ) -> ReindexRun:
        """Rebuild every user's objects, resuming run `run` where it stopped."""
        runs = self._stores.reindex_runs
        state = await runs.get(run)
        if state is None or state.collection != self._index.name or state.finish_time is not None:
            state = ReindexRun(run, self._index.name, None, 0, 0, datetime.now(UTC), None)
            await runs.save(state)
        seen: set[str] = set()
        token = state.last_token
        while users := await self._stores.conversations.users_after(token, _USERS_PER_PAGE):
            for token, user_id in users:
                rebuilt = await self.user(user_id, functools.partial(advance, user_id))
                seen.add(user_id)
                state = replace(
                    state, last_token=token, users=state.users + 1, messages=state.messages + rebuilt.messages
                )
                await runs.save(state)
        # Tenants of users without conversations (erased, or nothing left). A resumed run
        # did not see the users before it resumed, so each is checked against Cassandra.
        for user_id in await self._index.tenants():
            if user_id not in seen and not await self._stores.conversations.ids_of(user_id):
                await self._index.delete_user(user_id)
        state = replace(state, finish_time=datetime.now(UTC))
        await runs.save(state)
        return state


def main(argv: list[str] | None = None) -> None:
    """`python -m svc_history reindex (--user USER | --all) [--run NAME]`."""
    from svc_history.search.app import open_search

    parser = argparse.ArgumentParser(prog="python -m svc_history reindex", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="the user id (or users/{user}) whose index to rebuild")
    which.add_argument("--all", action="store_true", help="rebuild everyone's index")
    parser.add_argument("--run", default="all", help="the run's name: the same name resumes it (--all)")
    args = parser.parse_args(argv)

    async def rebuild() -> None:
        settings = HistorySettings()
        async with open_search(settings) as (stores, index, embedder):
            reindex = Reindex(stores, index, embedder, embed_timeout_s=settings.search.embed_batch_timeout_s)
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns) as progress:
                if args.user:
                    user_id = args.user.removeprefix("users/")
                    task = progress.add_task(f"users/{user_id}", total=await reindex.count(user_id))
                    result = await reindex.user(user_id, lambda n: progress.advance(task, n))
                    progress.console.print(
                        f"{result.messages} messages written, {result.removed} stale objects removed"
                    )
                else:
                    task = progress.add_task("messages", total=None)
                    users = progress.add_task("users", total=None)
                    done: set[str] = set()

                    def advance(user_id: str, n: int) -> None:
                        progress.advance(task, n)
                        if user_id not in done:
                            done.add(user_id)
                            progress.advance(users, 1)

                    state = await reindex.everyone(args.run, advance)
                    progress.console.print(f"run {state.run}: {state.users} users, {state.messages} messages")

    asyncio.run(rebuild())
