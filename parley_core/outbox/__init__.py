"""The events outbox: events reach Pulsar after the write they describe, and are never lost.

A service writes an event row into the outbox table right after (or, in a logged batch,
together with) the write the event describes. A relay in the same process publishes
pending rows to Pulsar and deletes each row once the broker has acknowledged it. A crash
or a Pulsar outage therefore loses nothing; the price is that Pulsar may see an event
twice (a crash between the acknowledgement and the delete), so consumers drop duplicates
by the `event_id` property.

Layout (docs/adr/0007-events-outbox.md): rows are spread over `shards` partitions by a
hash of their key (the user id), ordered inside a shard by a time-based UUID taken when the
event was added. A relay publishes one shard at a time, in that order, and never sends an
event before the previous event of its key was acknowledged, so one user's events reach
Pulsar in the order they were added. Several instances may run relays: a relay works on a
shard only while it holds the shard's lease (an LWT row with a TTL, renewed while it
works, released when the shard is empty), so two relays do not publish the same event
unless a lease ran out mid-way.

Deleted rows leave tombstones. A relay therefore reads a shard from a cursor (the oldest
row it last saw, less `reorder_window_s` for writers whose clocks lag), not from the start,
and re-reads from the start every `full_scan_s` for stragglers; `gc_grace_seconds` is
short (a resurrected row is only a duplicate publish).
"""

from parley_core.outbox._relay import OutboxRelay, PulsarClient
from parley_core.outbox._store import (
    DEFAULT_SHARDS,
    OUTBOX_LEASES_CQL,
    OUTBOX_STATEMENTS,
    OUTBOX_TABLE_CQL,
    Outbox,
    OutboxEvent,
    outbox_migration,
)

__all__ = [
    "DEFAULT_SHARDS",
    "OUTBOX_LEASES_CQL",
    "OUTBOX_STATEMENTS",
    "OUTBOX_TABLE_CQL",
    "Outbox",
    "OutboxEvent",
    "OutboxRelay",
    "PulsarClient",
    "outbox_migration",
]
