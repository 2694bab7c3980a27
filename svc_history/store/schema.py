"""svc_history's schema as versioned migrations (parley_core.migrations), `{ks}` the keyspace.

Applied at start-up and by `python -m svc_history migrate`. Never edit a migration that
has run anywhere: add a new one. Why the tables look like this: docs/adr/0008-history.md.
"""

from __future__ import annotations

from parley_core.migrations import Migration
from parley_core.outbox import outbox_migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations, message trees in bounded buckets, share links, request ids, erasures",
        (
            # One row per conversation, in its owner's partition.
            """CREATE TABLE IF NOT EXISTS {ks}.conversations (
                user_id text, conversation_id uuid, title text, model text, system_prompt text,
                folder text, tags list<text>, pinned boolean, archived boolean, active_message uuid,
                create_time timestamp, update_time timestamp, version uuid, request_id text,
                PRIMARY KEY ((user_id), conversation_id))""",
            # The listing order: pinned first, then the most recently updated. An entry whose
            # values differ from its conversation's row is stale and skipped (and removed).
            """CREATE TABLE IF NOT EXISTS {ks}.conversation_order (
                user_id text, pinned_rank int, update_time timestamp, conversation_id uuid,
                PRIMARY KEY ((user_id), pinned_rank, update_time, conversation_id))
                WITH CLUSTERING ORDER BY (pinned_rank DESC, update_time DESC, conversation_id DESC)""",
            # Messages, one row each, in partitions of at most `message_bucket_size` messages.
            """CREATE TABLE IF NOT EXISTS {ks}.messages (
                conversation_id uuid, bucket int, message_id uuid, user_id text, parent_id uuid,
                author text, text text, model text, state text, input_tokens bigint,
                output_tokens bigint, has_usage boolean, turn text, create_time timestamp,
                PRIMARY KEY ((conversation_id, bucket), message_id))""",
            # The tree's skeleton: where each message is and what it follows (about 50 bytes
            # a message), by message and by parent.
            """CREATE TABLE IF NOT EXISTS {ks}.message_tree (
                conversation_id uuid, message_id uuid, parent_id uuid, bucket int,
                user_id text static,
                PRIMARY KEY ((conversation_id), message_id))""",
            """CREATE TABLE IF NOT EXISTS {ks}.message_children (
                conversation_id uuid, parent_id uuid, message_id uuid, user_id text static,
                PRIMARY KEY ((conversation_id), parent_id, message_id))""",
            # How many messages a conversation has (it picks the bucket of the next one).
            """CREATE TABLE IF NOT EXISTS {ks}.message_counts (
                conversation_id uuid PRIMARY KEY, messages counter)""",
            # Share links: the owner's view, the public token's view, and the read counts.
            """CREATE TABLE IF NOT EXISTS {ks}.share_links (
                user_id text, conversation_id uuid, share_link_id timeuuid, token_hash text,
                last_message uuid, expire_time timestamp, password_hash text,
                create_time timestamp, title text, request_id text,
                PRIMARY KEY ((user_id, conversation_id), share_link_id))
                WITH CLUSTERING ORDER BY (share_link_id DESC)""",
            """CREATE TABLE IF NOT EXISTS {ks}.share_tokens (
                token_hash text PRIMARY KEY, user_id text, conversation_id uuid,
                share_link_id timeuuid, last_message uuid, expire_time timestamp,
                password_hash text, create_time timestamp, title text)""",
            """CREATE TABLE IF NOT EXISTS {ks}.share_views (
                user_id text, conversation_id uuid, share_link_id timeuuid, views counter,
                PRIMARY KEY ((user_id, conversation_id), share_link_id))""",
            # request_id -> what the first request made, for idempotent creates and appends.
            """CREATE TABLE IF NOT EXISTS {ks}.requests (
                scope text, request_id text, user_id text, resource_id uuid, payload blob,
                create_time timestamp,
                PRIMARY KEY ((scope), request_id))""",
            # An erasure under way: its event id and what it removed so far.
            """CREATE TABLE IF NOT EXISTS {ks}.erasures (
                user_id text PRIMARY KEY, event_id uuid, start_time timestamp,
                conversations bigint, messages bigint, share_links bigint)""",
        ),
    ),
    # The events outbox (parley_core.outbox) of history's keyspace.
    outbox_migration(2),
    Migration(
        3,
        "search reindex runs: where a rebuild of the index got to",
        (
            # One row per run (`python -m svc_history reindex --run NAME`): the token of the
            # last user finished, so an interrupted rebuild resumes after it.
            """CREATE TABLE IF NOT EXISTS {ks}.search_reindex (
                run text PRIMARY KEY, collection text, last_token bigint, users bigint,
                messages bigint, start_time timestamp, finish_time timestamp)""",
        ),
    ),
)
