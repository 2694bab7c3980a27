"""Which backend answers a turn: the catalog's order, circuit breakers, failover and health.

A model's backends are tried in catalog order, then the backends of its `fallbacks` models
(each model's own backends, not its fallbacks' fallbacks). A try succeeds when its first
event arrives within `first_token_timeout_s`; an error, an empty stream or a timeout before
then is the backend's failure (its breaker counts it) and the next one is tried, after the
failed stream is closed so that the backend stops working on it. After the first event
there is no failover: the turn has shown text, and the error goes to the turn engine.

Breakers and health are per backend key ("triton/smollm2", "openai/llama/smollm2"), shared
by every catalog model that names the key: a key names one model on one server, whatever
parameters a catalog entry adds. A key that failed once in a turn is not tried again in
that turn (as a fallback model's backend, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Literal

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from tritonclient.grpc.aio import InferenceServerClient

from parley_core.catalog import Catalog, CatalogModel
from parley_core.catalog import OpenAIBackend as OpenAIEntry
from parley_core.catalog import TritonBackend as TritonEntry
from svc_router.backends._base import Backend, BackendError, BackendEvent, BackendHealth, Finish, Generation
from svc_router.backends._breaker import BreakerState, CircuitBreaker
from svc_router.backends._openai import OpenAIBackend
from svc_router.backends._triton import TritonBackend
from svc_router.settings import RouterSettings

_log = structlog.get_logger("parley.router.backends")

#: What ListModels says of a model: its first backend answers ("ready"), only another
#: backend or a fallback model does ("degraded"), none does ("unavailable"), or no probe
#: has finished yet ("unknown").
ModelHealth = Literal["ready", "degraded", "unavailable", "unknown"]

_BREAKER_LEVEL: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}


class NoBackendAvailable(BackendError):  # noqa: N818 (the turn engine's name for it)
    """Every backend of the model and of its fallbacks failed before its first token, or was refused."""

    def __init__(self, model: str, *, detail: str) -> None:
        super().__init__(f"no backend of models/{model} could answer; retry shortly", detail=detail)
        self.model = model


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.tries = Counter(
            "parley_router_backend_tries",
            "Tries of a backend by the router, by outcome: 'answered' (first event in time), "
            "'failed' (error or empty stream before it), 'timeout' (no first event in "
            "first_token_timeout_s), 'refused' (the request itself was refused; no failover), "
            "'skipped' (its breaker was open), 'cancelled' (the turn went away first).",
            ["backend", "outcome"],
            registry=registry,
        )
        self.failovers = Counter(
            "parley_router_backend_failovers",
            "Tries that failed before their first event where the router went on to another backend.",
            ["backend"],
            registry=registry,
        )
        self.broken = Counter(
            "parley_router_backend_broken_streams",
            "Streams that failed or went silent after their first event (the turn failed).",
            ["backend"],
            registry=registry,
        )
        self.unanswered = Counter(
            "parley_router_unanswered_turns",
            "Turns for which no backend of the model or its fallbacks answered.",
            ["model"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "parley_router_backend_breaker_state",
            "Each backend's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=registry,
        )
        self.ready = Gauge(
            "parley_router_backend_ready",
            "1 when the backend's last health probe found it ready, else 0.",
            ["backend"],
            registry=registry,
        )


class RoutedStream:
    """A backend's answer after its first event: `first`, then the rest by async iteration.

    Iteration ends after the Finish. A failure, or `inter_token_timeout_s` without an
    event, raises BackendError (the backend's request is cancelled first); there is no
    failover once the first event came. `aclose()` cancels the backend's request; call it
    when the turn ends early (it does nothing after the Finish).
    """

    def __init__(
        self,
        *,
        model: CatalogModel,
        backend: str,
        request_id: str,
        first: BackendEvent,
        events: AsyncIterator[BackendEvent],
        inter_token_timeout_s: float,
        on_broken: Callable[[], None],
    ) -> None:
        #: The model that answers: the requested one or one of its fallbacks.
        self.model = model
        #: The key of the backend that answers.
        self.backend = backend
        #: The request id the backend got (the generation's, with "-N" on the Nth try).
        self.request_id = request_id
        self.first = first
        self._events = events
        self._inter_token_timeout_s = inter_token_timeout_s
        self._on_broken = on_broken
        self._done = isinstance(first, Finish)

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> BackendEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(self._inter_token_timeout_s):
                event = await anext(self._events)
        except TimeoutError:
            await self._fail()
            raise BackendError(
                "the model stopped answering",
                detail=f"{self.backend}: nothing for {self._inter_token_timeout_s} s after a token",
            ) from None
        except StopAsyncIteration:
            await self._fail()
            raise BackendError(
                "the model stopped answering", detail=f"{self.backend}: the stream ended without a finish"
            ) from None
        except BackendError:
            await self._fail()
            raise
        if isinstance(event, Finish):
            await self.aclose()
        return event

    async def aclose(self) -> None:
        self._done = True
        await _close(self._events)

    async def _fail(self) -> None:
        self._on_broken()
        await self.aclose()


class ModelRoutes:
    """Every catalog model's backends, their breakers and health, built from the settings.

    Build it on the event loop (it opens the gRPC channel to Triton and the HTTP session),
    `start()` the health probes, `close()` at shutdown. Triton backends share one client per
    target; OpenAI backends share one aiohttp session, made only when the catalog has one.
    Tests may pass their own clients (then `close()` leaves them open) and a clock for the
    breakers.
    """

    def __init__(
        self,
        catalog: Catalog,
        settings: RouterSettings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        triton: InferenceServerClient | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.catalog = catalog
        self._settings = settings
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._owns_triton = triton is None
        self._owns_http = http is None
        self._triton = triton
        self._http = http
        self._routes: dict[str, tuple[Backend, ...]] = {}
        self._by_key: dict[str, Backend] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._probes: dict[str, BackendHealth] = {}
        self._health_task: asyncio.Task[None] | None = None
        # Every endpoint is checked before anything is opened, so that a refused catalog
        # leaves no session behind.
        for model in catalog.models:
            for entry in model.backends:
                if isinstance(entry, OpenAIEntry) and entry.endpoint not in settings.openai_endpoints:
                    raise ValueError(
                        f"the catalog's backend {entry.key} names the endpoint {entry.endpoint!r}, "
                        f"which the settings' openai_endpoints do not define"
                    )
        for model in catalog.models:
            self._routes[model.name] = tuple(self._backend(entry) for entry in model.backends)
        for key in self._by_key:
            self.breakers[key] = self._breaker(key, clock)

    def _backend(self, entry: TritonEntry | OpenAIEntry) -> Backend:
        backend: Backend
        if isinstance(entry, TritonEntry):
            if self._triton is None:
                self._triton = InferenceServerClient(self._settings.triton_target)
            backend = TritonBackend(self._triton, entry.model, entry.parameters, entry.key)
        else:
            if self._http is None:
                self._http = _http_session(self._settings)
            endpoint = self._settings.openai_endpoints[entry.endpoint]
            api_key = endpoint.api_key.get_secret_value() if endpoint.api_key else None
            backend = OpenAIBackend(
                self._http, endpoint.base_url, api_key, entry.model, entry.parameters, entry.key
            )
        self._by_key.setdefault(backend.key, backend)
        return backend

    def _breaker(self, key: str, clock: Callable[[], float]) -> CircuitBreaker:
        def changed(state: BreakerState) -> None:
            log = _log.warning if state == "open" else _log.info
            log("backend breaker", backend=key, state=state)

        breaker = CircuitBreaker(
            self._settings.breaker.failure_threshold,
            self._settings.breaker.open_s,
            clock=clock,
            on_change=changed,
        )
        # Read at scrape time, so an open breaker whose time is up shows as half-open.
        self._metrics.breaker_state.labels(key).set_function(lambda: _BREAKER_LEVEL[breaker.state])
        return breaker

    def backends(self, model: CatalogModel) -> tuple[Backend, ...]:
        """The model's own backends, in catalog order."""
        return self._routes[model.name]

    async def open(self, model: CatalogModel, generation: Generation) -> RoutedStream:
        """The first backend of `model` (then of its fallbacks) that sends a first event in time.

        Raises NoBackendAvailable when none did, or the BackendError of a backend that
        refused the request itself (`retryable=False`: another backend would refuse it too).
        Cancelling the caller cancels the try in progress.
        """
        failed: list[str] = []
        tried: set[str] = set()
        candidates = list(self._candidates(model))
        attempt = 0
        for position, (answering, backend) in enumerate(candidates):
            key = backend.key
            if key in tried:
                continue
            breaker = self.breakers[key]
            if not breaker.allow():
                self._metrics.tries.labels(key, "skipped").inc()
                failed.append(f"{key}: breaker open")
                continue
            tried.add(key)
            attempt += 1
            request_id = generation.request_id if attempt == 1 else f"{generation.request_id}-{attempt}"
            attempt_generation = replace(
                generation,
                max_tokens=min(generation.max_tokens, answering.max_output_tokens),
                request_id=request_id,
            )
            events = backend.stream(attempt_generation)
            outcome, detail = "failed", ""
            try:
                async with asyncio.timeout(self._settings.first_token_timeout_s):
                    first = await anext(events)
            except asyncio.CancelledError:
                breaker.abandon()
                self._metrics.tries.labels(key, "cancelled").inc()
                await _close(events)
                raise
            except TimeoutError:
                outcome, detail = "timeout", f"no first event in {self._settings.first_token_timeout_s} s"
            except StopAsyncIteration:
                detail = "the stream ended before its first event"
            except BackendError as error:
                if not error.retryable:
                    # The backend is up and said so; the request is what failed.
                    breaker.record_success()
                    self._metrics.tries.labels(key, "refused").inc()
                    _log.info(
                        "backend refused the request", backend=key, request_id=request_id, detail=error.detail
                    )
                    await _close(events)
                    raise
                detail = error.detail or error.message
            except Exception as error:
                # A backend's bug must not end the turn while other backends could answer.
                _log.exception("backend raised an unexpected error", backend=key, request_id=request_id)
                detail = f"{type(error).__name__}: {error}"
            else:
                breaker.record_success()
                self._metrics.tries.labels(key, "answered").inc()
                return RoutedStream(
                    model=answering,
                    backend=key,
                    request_id=request_id,
                    first=first,
                    events=events,
                    inter_token_timeout_s=self._settings.inter_token_timeout_s,
                    on_broken=self._metrics.broken.labels(key).inc,
                )
            await _close(events)
            breaker.record_failure()
            self._metrics.tries.labels(key, outcome).inc()
            if position < len(candidates) - 1:
                self._metrics.failovers.labels(key).inc()
            failed.append(f"{key}: {detail}")
            _log.warning(
                "backend failed before its first event",
                backend=key,
                model=answering.name,
                request_id=request_id,
                outcome=outcome,
                detail=detail,
            )
        self._metrics.unanswered.labels(model.name).inc()
        raise NoBackendAvailable(model.name, detail="; ".join(failed))

    def _candidates(self, model: CatalogModel) -> Iterator[tuple[CatalogModel, Backend]]:
        for backend in self._routes[model.name]:
            yield model, backend
        for name in model.fallbacks:
            fallback = self.catalog.model(name)
            for backend in self._routes[name]:
                yield fallback, backend

    async def health(self, model: CatalogModel) -> ModelHealth:
        """The model's health from the last probes and the breakers (see ModelHealth)."""
        first, *others = [backend.key for _, backend in self._candidates(model)]
        usable = {key: self._usable(key) for key in (first, *others)}
        if usable[first]:
            return "ready"
        if any(usable[key] for key in others):
            return "degraded"
        if any(value is None for value in usable.values()):
            return "unknown"
        return "unavailable"

    def _usable(self, key: str) -> bool | None:
        """Whether the key's last probe found it ready and its breaker is not open; None: not probed yet."""
        probe = self._probes.get(key)
        if probe is None:
            return None
        return probe.ready and self.breakers[key].state != "open"

    async def refresh_health(self) -> None:
        """Probe every backend once, at the same time."""
        keys = list(self._by_key)
        results = await asyncio.gather(*(self._probe(self._by_key[key]) for key in keys))
        for key, health in zip(keys, results, strict=True):
            previous = self._probes.get(key)
            self._probes[key] = health
            self._metrics.ready.labels(key).set(1 if health.ready else 0)
            if previous is None or previous.ready != health.ready:
                _log.info("backend health", backend=key, ready=health.ready, detail=health.detail)

    async def _probe(self, backend: Backend) -> BackendHealth:
        try:
            return await backend.probe()
        except Exception as error:
            _log.exception("backend probe raised", backend=backend.key)
            return BackendHealth(ready=False, detail=f"{backend.key}: {type(error).__name__}: {error}")

    async def start(self) -> None:
        """Probe every backend now and then every `health_interval_s`, in the background."""
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._probe_forever(), name="backend-health")

    async def _probe_forever(self) -> None:
        while True:
            await self.refresh_health()
            await asyncio.sleep(self._settings.health_interval_s)

    async def close(self) -> None:
        """Stop the probes and close the clients this object made."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        for backend in self._by_key.values():
            await backend.close()
        if self._owns_triton and self._triton is not None:
            await self._triton.close()
        if self._owns_http and self._http is not None:
            await self._http.close()


def _http_session(settings: RouterSettings) -> aiohttp.ClientSession:
    """The OpenAI backends' session: one connection per stream, up to `openai_max_connections`."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=settings.openai_max_connections,
            # Under the 5 s that servers commonly keep an idle connection (uvicorn's), so that
            # a stream is not sent on a connection the server is closing: a POST is not retried.
            keepalive_timeout=4.0,
        ),
        timeout=aiohttp.ClientTimeout(
            # No total or read timeout: the router times the first token and the gaps itself.
            total=None,
            sock_read=None,
            # Waiting for a free connection and connecting, together (aiohttp's "connect"),
            # as long as a first token may take; connecting alone, 10 s.
            connect=settings.first_token_timeout_s,
            sock_connect=10.0,
        ),
    )


async def _close(events: AsyncIterator[BackendEvent]) -> None:
    """Close a backend's stream (an async generator), which cancels its request."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
