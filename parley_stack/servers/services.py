"""Parley's own four services, run from the project's venv once their servers are ready."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
import urllib.request
from dataclasses import replace

import grpc
from grpc_health.v1 import health_pb2

from parley_core.stubs import health_stub
from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.cassandra import credentials as cassandra_credentials
from parley_stack.servers.jaeger import otlp_endpoint


def grpc_serving(host: str, port: int, service: str = "") -> bool:
    """True when grpc.health.v1 answers SERVING for service ("" is the whole server)."""
    try:
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            reply = health_stub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _indexer_subscribed(url: str) -> bool:
    """True when the search indexer's metrics say it holds its subscription."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - a loopback http URL
            text = reply.read().decode()
    except OSError:
        return False
    return "parley_search_indexer_subscribed 1.0" in text


#: Parley's services that call others with a service token.
SERVICES = ("svc_session", "svc_history", "svc_router", "svc_ledger")


def _stack_secret(config: StackConfig, name: str) -> str:
    """A 256-bit secret made once per stack and kept with its data (a Secret in production)."""
    path = config.data_dir("secrets") / name
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
    return path.read_text().strip()


def service_secret(config: StackConfig, service: str) -> str:
    return _stack_secret(config, f"{service}.service-secret")


class ParleyService(Server):
    """One service: `python -m <name>` with its PARLEY_<KEY>_* settings."""

    #: The settings prefix and port names: PARLEY_SESSION_*, "session_grpc", ...
    key: str

    def is_installed(self) -> bool:
        return True  # the project's venv is the installation

    def install(self, progress: Progress) -> None:
        """Nothing to install: `make` syncs the venv before the stack runs."""

    def environment(self) -> dict[str, str]:
        """Where the service finds the servers it needs; extended by each service."""
        prefix = f"PARLEY_{self.key.upper()}_"
        return {
            f"{prefix}HOST": self.config.host,
            f"{prefix}PORT": str(self.config.port(f"{self.key}_grpc")),
            f"{prefix}METRICS_PORT": str(self.config.port(f"{self.key}_metrics")),
            f"{prefix}LOG_FORMAT": "json",
            # Service identity: this service's secret, and where it trades it for a token.
            f"{prefix}SERVICE_SECRET": service_secret(self.config, self.name),
            f"{prefix}IDENTITY_TARGET": f"{self.config.host}:{self.config.port('session_internal')}",
            "PYTHONUNBUFFERED": "1",
            **self._cassandra_environment(),
            **self._tracing_environment(),
        }

    def _cassandra_environment(self) -> dict[str, str]:
        """The role every service signs in as where the stack's Cassandra authenticates."""
        signed_in = cassandra_credentials(self.config)
        if signed_in is None:
            return {}
        prefix = f"PARLEY_{self.key.upper()}_"
        return {f"{prefix}CASSANDRA_USERNAME": signed_in[0], f"{prefix}CASSANDRA_PASSWORD": signed_in[1]}

    def _tracing_environment(self) -> dict[str, str]:
        """Where spans go while the stack's Jaeger runs (`parley up --with tracing`)."""
        otlp = otlp_endpoint(self.config)
        return {f"PARLEY_{self.key.upper()}_OTLP_ENDPOINT": otlp} if otlp else {}

    def _tracing_endpoints(self) -> dict[str, str]:
        otlp = otlp_endpoint(self.config)
        return {"otlp": otlp} if otlp else {}

    def processes(self) -> list[ProcessSpec]:
        host, port = self.config.host, self.config.port(f"{self.key}_grpc")
        metrics = self.config.port(f"{self.key}_metrics")
        return [
            ProcessSpec(
                name=self.name,
                argv=[sys.executable, "-m", self.name],
                env=self.environment(),
                cwd=REPO_ROOT,
                ready=lambda: grpc_serving(host, port),
                endpoints={
                    "grpc": f"{host}:{port}",
                    "metrics": f"{host}:{metrics}",
                    **self._tracing_endpoints(),
                },
                ready_timeout_s=30,
                stop_timeout_s=15,
            )
        ]


class SessionService(ParleyService):
    name = "svc_session"
    key = "session"
    requires = ("redis", "cassandra", "pulsar")

    def environment(self) -> dict[str, str]:
        cfg = self.config
        return {
            **super().environment(),
            "PARLEY_SESSION_CASSANDRA_HOSTS": f'["{cfg.host}"]',
            "PARLEY_SESSION_CASSANDRA_PORT": str(cfg.port("cassandra_cql")),
            "PARLEY_SESSION_REDIS_URL": f"redis://{cfg.host}:{cfg.port('redis')}/0",
            "PARLEY_SESSION_PULSAR_URL": f"pulsar://{cfg.host}:{cfg.port('pulsar')}",
            "PARLEY_SESSION_JWKS_PORT": str(cfg.port("session_jwks")),
            "PARLEY_SESSION_INTERNAL_HOST": cfg.host,
            "PARLEY_SESSION_INTERNAL_PORT": str(cfg.port("session_internal")),
            "PARLEY_SESSION_KEY_ENCRYPTION_KEY": _stack_secret(cfg, "key-encryption-key"),
            "PARLEY_SESSION_SERVICE_CREDENTIALS": json.dumps(
                {name: hashlib.sha256(service_secret(cfg, name).encode()).hexdigest() for name in SERVICES}
            ),
            "PARLEY_SESSION_PUBLIC_URL": f"http://{cfg.host}:{cfg.port('envoy_public')}",
            "PARLEY_SESSION_DEV_MAILBOX_DIR": str(cfg.data_dir("mailbox")),
            # Envoy reaches the services from loopback and names the client in a header.
            "PARLEY_SESSION_TRUSTED_PROXIES": f'["{cfg.host}"]',
        }

    def processes(self) -> list[ProcessSpec]:
        [spec] = super().processes()
        jwks = f"http://{self.config.host}:{self.config.port('session_jwks')}/.well-known/jwks.json"
        internal = f"{self.config.host}:{self.config.port('session_internal')}"
        return [replace(spec, endpoints={**spec.endpoints, "jwks": jwks, "internal": internal})]


class HistoryService(ParleyService):
    name = "svc_history"
    key = "history"
    # svc_session: its JWKS verifies users' and services' tokens. Weaviate and Triton: search
    # (the index, the embedding model).
    requires = ("cassandra", "redis", "pulsar", "weaviate", "triton", "svc_session")

    def environment(self) -> dict[str, str]:
        cfg = self.config
        return {
            **super().environment(),
            "PARLEY_HISTORY_SEARCH__WEAVIATE_HOST": cfg.host,
            "PARLEY_HISTORY_SEARCH__WEAVIATE_HTTP_PORT": str(cfg.port("weaviate_http")),
            "PARLEY_HISTORY_SEARCH__WEAVIATE_GRPC_PORT": str(cfg.port("weaviate_grpc")),
            "PARLEY_HISTORY_SEARCH__TRITON_TARGET": f"{cfg.host}:{cfg.port('triton_grpc')}",
            "PARLEY_HISTORY_SEARCH__INDEXER_METRICS_PORT": str(cfg.port("indexer_metrics")),
            "PARLEY_HISTORY_CASSANDRA_HOSTS": f'["{cfg.host}"]',
            "PARLEY_HISTORY_CASSANDRA_PORT": str(cfg.port("cassandra_cql")),
            "PARLEY_HISTORY_REDIS_URL": f"redis://{cfg.host}:{cfg.port('redis')}/0",
            "PARLEY_HISTORY_PULSAR_URL": f"pulsar://{cfg.host}:{cfg.port('pulsar')}",
            "PARLEY_HISTORY_JWKS_URL": f"http://{cfg.host}:{cfg.port('session_jwks')}/.well-known/jwks.json",
            "PARLEY_HISTORY_PAGE_TOKEN_KEY": _stack_secret(cfg, "history-page-token-key"),
            # Envoy reaches the services from loopback and names the client in a header.
            "PARLEY_HISTORY_TRUSTED_PROXIES": f'["{cfg.host}"]',
        }

    def processes(self) -> list[ProcessSpec]:
        """The API, and the search indexer beside it (`python -m svc_history indexer`)."""
        [api] = super().processes()
        metrics = f"{self.config.host}:{self.config.port('indexer_metrics')}"
        indexer = ProcessSpec(
            name="svc_history-indexer",
            argv=[sys.executable, "-m", self.name, "indexer"],
            env=self.environment(),
            cwd=REPO_ROOT,
            ready=lambda: _indexer_subscribed(f"http://{metrics}/metrics"),
            endpoints={"metrics": metrics, **self._tracing_endpoints()},
            ready_timeout_s=30,
            stop_timeout_s=15,
        )
        return [api, indexer]


class RouterService(ParleyService):
    name = "svc_router"
    key = "router"
    # llama: the OpenAI-compatible second backend of smollm2 (failover between real servers).
    # svc_ledger: it keeps the budgets' Redis state that admission reserves against.
    requires = ("cassandra", "redis", "pulsar", "triton", "llama", "svc_session", "svc_history", "svc_ledger")

    def environment(self) -> dict[str, str]:
        cfg = self.config
        return {
            **super().environment(),
            "PARLEY_ROUTER_CASSANDRA_HOSTS": f'["{cfg.host}"]',
            "PARLEY_ROUTER_CASSANDRA_PORT": str(cfg.port("cassandra_cql")),
            "PARLEY_ROUTER_REDIS_URL": f"redis://{cfg.host}:{cfg.port('redis')}/0",
            "PARLEY_ROUTER_PULSAR_URL": f"pulsar://{cfg.host}:{cfg.port('pulsar')}",
            "PARLEY_ROUTER_JWKS_URL": f"http://{cfg.host}:{cfg.port('session_jwks')}/.well-known/jwks.json",
            "PARLEY_ROUTER_HISTORY_TARGET": f"{cfg.host}:{cfg.port('history_grpc')}",
            "PARLEY_ROUTER_TRITON_TARGET": f"{cfg.host}:{cfg.port('triton_grpc')}",
            "PARLEY_ROUTER_OPENAI_ENDPOINTS": json.dumps(
                {"llama": {"base_url": f"http://{cfg.host}:{cfg.port('llama_http')}/v1"}}
            ),
        }


class LedgerService(ParleyService):
    name = "svc_ledger"
    key = "ledger"
    # svc_session: its JWKS verifies users' tokens. Redis: the budgets the router reserves against.
    requires = ("cassandra", "redis", "pulsar", "svc_session")

    def environment(self) -> dict[str, str]:
        cfg = self.config
        return {
            **super().environment(),
            "PARLEY_LEDGER_CASSANDRA_HOSTS": f'["{cfg.host}"]',
            "PARLEY_LEDGER_CASSANDRA_PORT": str(cfg.port("cassandra_cql")),
            "PARLEY_LEDGER_REDIS_URL": f"redis://{cfg.host}:{cfg.port('redis')}/0",
            "PARLEY_LEDGER_PULSAR_URL": f"pulsar://{cfg.host}:{cfg.port('pulsar')}",
            "PARLEY_LEDGER_JWKS_URL": f"http://{cfg.host}:{cfg.port('session_jwks')}/.well-known/jwks.json",
            **self._health_environment(),
        }

    def _health_environment(self) -> dict[str, str]:
        """What GetSystemHealth probes: the services' gRPC health, the indexer's metrics,
        Envoy's internal listener, Triton's HTTP API, and Pulsar's admin API where the stack
        has one (Apache Pulsar; pulsar-lite has none, so the index backlog is UNKNOWN)."""
        cfg = self.config
        services = {name: f"{cfg.host}:{cfg.port(name.removeprefix('svc_') + '_grpc')}" for name in SERVICES}
        env = {
            "PARLEY_LEDGER_HEALTH__SERVICES": json.dumps(services),
            "PARLEY_LEDGER_HEALTH__INDEXER_METRICS_URL": (
                f"http://{cfg.host}:{cfg.port('indexer_metrics')}/metrics"
            ),
            "PARLEY_LEDGER_HEALTH__EDGE_URL": f"http://{cfg.host}:{cfg.port('envoy_internal')}",
            "PARLEY_LEDGER_HEALTH__TRITON_URL": f"http://{cfg.host}:{cfg.port('triton_http')}",
        }
        if cfg.pulsar == "apache":
            env["PARLEY_LEDGER_HEALTH__PULSAR_ADMIN_URL"] = f"http://{cfg.host}:{cfg.port('pulsar_http')}"
        return env
