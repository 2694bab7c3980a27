"""What every Parley service shares, kept small on purpose.

A service's own logic lives in its own package; `parley_core` knows no service. Its
public modules, each with an `__all__`:

- `settings`: `ServiceSettings`, what every service's settings start from.
- `logging`: structlog set-up (JSON lines, or a console on a terminal).
- `server`: the grpc.aio server with health, reflection, metrics, a concurrency cap and a
  graceful stop; `run_service` / `run_until_signal` for a service's main.
- `errors`: `RpcError` and the `google.rpc` details every status carries.
- `paging`: AIP-158 page sizes and opaque page tokens.
- `wire`: timestamps, resource names and call metadata.
- `cassandra`: a LOCAL_QUORUM session and awaitable queries.
- `auth`: access tokens, the caller (`Principal`), revocation state and the interceptor.
- `servicer`: serving a service from its descriptor, UNIMPLEMENTED for what is not built.
- `stubs`: typed asyncio client stubs.
- `observability`: one log line, metrics and a span per RPC.
- `migrations`, `outbox`, `events`: versioned CQL migrations, the events outbox and its
  relay to Pulsar, and the topics events go to.
- `ratelimit`: token buckets in Redis, taken all or nothing by one Lua script.
- `catalog`: the model catalog (model_repo/catalog.toml), typed and validated.
"""
