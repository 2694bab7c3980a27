"""Search over a user's own messages: Weaviate holds them (one tenant per user), Triton embeds.

- `documents`: what one indexed message is (its deterministic object id, its properties),
  and the snippet with the query's words marked.
- `embedding`: the sentence-embedding model on Triton (model_repo/minilm-l6).
- `index`: the Weaviate collection: upserts, deletes, the three kinds of query.
- `ranking`: hybrid fusion and the stable order pages are cut from (pure).
- `searching`: SearchMessages' domain (validation, paging, the Cassandra check that keeps
  deleted conversations out while the index lags).
- `indexer`: the process that follows the history events into the index.
- `reindex`: rebuilds the index from Cassandra.

Why it is built this way: docs/adr/0015-search.md.
"""
