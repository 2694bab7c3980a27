"""The router bench's servers: a catalog of its two models, svc_router as the stack runs it
(with the bench's catalog, endpoint and tier limits), and the users whose turns it takes."""

from __future__ import annotations

import json
import secrets
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from bench._router_paths import User
from bench.litellm_env import free_port
from parley.session.v1 import session_pb2
from parley_core.stubs import session_stub
from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.process import ProcessTable
from parley_stack.servers.base import ProcessSpec
from parley_stack.servers.services import RouterService, grpc_serving

TRITON_MODEL = "bench-triton"
OPENAI_MODEL = "bench-openai"
OPENAI_ENDPOINT = "bench"
SCRIPTED_OPENAI_MODEL = "scripted"
PASSWORD = "benchmark passphrase 1"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def bench_catalog() -> str:
    """Two models shaped like the repository's parley-scripted: one on Triton, one on scripted-openai."""
    repo = tomllib.loads((REPO_ROOT / "model_repo" / "catalog.toml").read_text())
    scripted = next(m for m in repo["models"] if m["name"] == "parley-scripted")
    models = [
        {
            **scripted,
            "name": TRITON_MODEL,
            "display_name": "Bench: parley-scripted on Triton",
            "fallbacks": [],
        },
        {
            **scripted,
            "name": OPENAI_MODEL,
            "display_name": "Bench: scripted-openai",
            "fallbacks": [],
            "backends": [{"kind": "openai", "endpoint": OPENAI_ENDPOINT, "model": SCRIPTED_OPENAI_MODEL}],
        },
    ]
    lines = [f"schema_version = {repo['schema_version']}", f"default_model = {_toml(TRITON_MODEL)}"]
    for model in models:
        lines += ["", "[[models]]", *(f"{key} = {_toml(value)}" for key, value in model.items())]
    return "\n".join(lines) + "\n"


def router_spec(config: StackConfig, catalog: Path, openai_base_url: str) -> ProcessSpec:
    """The stack's svc_router process, with the bench's catalog, endpoint and tier limits."""
    [spec] = RouterService(config).processes()
    host, port, metrics = config.host, free_port(), free_port()
    unlimited = {"capacity": 1_000_000_000, "refill_per_s": 1_000_000_000.0}
    tier = {"turns": unlimited, "tokens": unlimited, "tier_turns": unlimited}
    env = {
        # What the stack's own environment for svc_router may not name yet.
        "PARLEY_ROUTER_CASSANDRA_HOSTS": json.dumps([host]),
        "PARLEY_ROUTER_CASSANDRA_PORT": str(config.port("cassandra_cql")),
        "PARLEY_ROUTER_REDIS_URL": f"redis://{host}:{config.port('redis')}/0",
        "PARLEY_ROUTER_PULSAR_URL": f"pulsar://{host}:{config.port('pulsar')}",
        "PARLEY_ROUTER_JWKS_URL": f"http://{host}:{config.port('session_jwks')}/.well-known/jwks.json",
        "PARLEY_ROUTER_HISTORY_TARGET": f"{host}:{config.port('history_grpc')}",
        "PARLEY_ROUTER_TRITON_TARGET": f"{host}:{config.port('triton_grpc')}",
        **spec.env,
        # The bench's own.
        "PARLEY_ROUTER_PORT": str(port),
        "PARLEY_ROUTER_METRICS_PORT": str(metrics),
        "PARLEY_ROUTER_CATALOG_PATH": str(catalog),
        "PARLEY_ROUTER_OPENAI_ENDPOINTS": json.dumps({OPENAI_ENDPOINT: {"base_url": openai_base_url}}),
        "PARLEY_ROUTER_TIERS": json.dumps({name: tier for name in ("free", "pro", "enterprise")}),
        # A window ends by dropping its streams. A turn gets its name (TurnStarted) only with
        # its first token, so one still waiting cannot be cancelled by name; with the default
        # grace (15 s) it would stream on into the next window.
        "PARLEY_ROUTER_ABANDON_GRACE_S": "0",
    }
    return replace(
        spec,
        name="svc_router-bench",
        env=env,
        ready=lambda: grpc_serving(host, port),
        endpoints={"grpc": f"{host}:{port}", "metrics": f"{host}:{metrics}"},
        ready_timeout_s=60,
    )


def start(table: ProcessTable, spec: ProcessSpec, server: str) -> int:
    """Start spec as a process of the stack (so `parley down` stops it too); its pid."""
    if table.running(spec.name) is not None:
        table.stop(spec.name)
    running = table.start(spec, server)
    deadline = time.monotonic() + spec.ready_timeout_s
    while not spec.ready():
        if table.running(spec.name) is None or time.monotonic() > deadline:
            table.stop(spec.name)
            raise RuntimeError(f"{spec.name} did not become ready; see {table.config.log_path(spec.name)}")
        time.sleep(0.25)
    return running.pid


async def register_users(session_target: str, count: int) -> list[User]:
    run_id = secrets.token_hex(4)
    async with grpc.aio.insecure_channel(session_target) as channel:
        stub = session_stub(channel)
        users = []
        for index in range(count):
            reply = await stub.Register(
                session_pb2.RegisterRequest(
                    email=f"router-bench-{run_id}-{index}@parley.test",
                    password=PASSWORD,
                    display_name="Bench",
                )
            )
            users.append(
                User(reply.user.name, (("authorization", f"Bearer {reply.credentials.access_token}"),))
            )
    return users
