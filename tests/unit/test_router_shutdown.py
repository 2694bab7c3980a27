"""A stopping router says NOT_SERVING first and lets the turns in flight finish.

Kubernetes (k8s/) sends SIGTERM and waits terminationGracePeriodSeconds: the readiness probe
and Envoy's health checks must see NOT_SERVING before anything ends, so new turns go to other
replicas while this one's streams complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from pydantic import SecretStr

from svc_router.app import RouterApp
from svc_router.engine import TurnEngine, _Running
from svc_router.settings import RouterSettings


class _Recorder:
    """Stands in for each part of a RouterApp, writing down the calls in order."""

    def __init__(self, calls: list[str], name: str) -> None:
        self._calls = calls
        self._name = name

    def __getattr__(self, method: str) -> Any:
        async def record(*args: object, **kwargs: object) -> None:
            details = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            self._calls.append(f"{self._name}.{method}({details})")

        return record


async def test_router_stop_says_not_serving_before_it_ends_any_turn() -> None:
    calls: list[str] = []
    settings = RouterSettings(shutdown_grace_s=7, service_secret=SecretStr("s"))
    parts = {
        name: _Recorder(calls, name)
        for name in (
            [
                "server",
                "engine",
                "routes",
                "catalog",
                "log",
                "revocations",
                "identity",
                "data",
                "history_channel",
                "triton",
                "erasure",
            ]
        )
    }
    app = RouterApp(settings, **cast(dict[str, Any], parts))
    await app.stop()
    assert calls[:3] == ["server.drain()", "engine.close(finish_s=7.0)", "server.stop()"]


def _engine(settings: RouterSettings) -> TurnEngine:
    nothing = cast(Any, None)
    return TurnEngine(settings, nothing, nothing, nothing, nothing, nothing, nothing, nothing, nothing)


def _turn(engine: TurnEngine, turn_id: str, generation_s: float) -> _Running:
    """A running turn whose generation takes generation_s (cancelled when stopped)."""
    turn = _Running(record=cast(Any, None), caller=cast(Any, None), model=cast(Any, None))

    async def generate() -> None:
        await asyncio.sleep(generation_s)

    async def run() -> None:
        assert turn.generation is not None
        with contextlib.suppress(asyncio.CancelledError):
            await turn.generation
        engine._running.pop(turn_id, None)

    turn.generation = asyncio.ensure_future(generate())
    turn.task = asyncio.ensure_future(run())
    engine._running[turn_id] = turn
    return turn


async def test_close_lets_a_turn_finish_within_the_grace_and_stops_the_rest() -> None:
    engine = _engine(RouterSettings(shutdown_grace_s=2, service_secret=SecretStr("s")))
    quick = _turn(engine, "quick", 0.1)
    slow = _turn(engine, "slow", 60)
    await asyncio.wait_for(engine.close(finish_s=0.5), 5)
    assert quick.stop_reason == ""
    assert quick.generation is not None
    assert not quick.generation.cancelled()
    assert slow.stop_reason == "shutdown"
    assert slow.generation is not None
    assert slow.generation.cancelled()
