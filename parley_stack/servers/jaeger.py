"""Jaeger v2 (`cmd/jaeger`, the all-in-one build of the OpenTelemetry Collector with
Jaeger's storage and query extensions), built from its Go module.

Only what the stack's tracing needs runs: OTLP over gRPC (the services, Envoy) and over
HTTP (Triton's exporter speaks only that), memory storage, and the query API (`/api/...`,
the UI's JSON API) and its gRPC twin. Everything listens on loopback, on the stack's port
slots; the collector's own metrics are off. Traces live in memory: `parley down` drops them.
See docs/stack/jaeger.md.
"""

from __future__ import annotations

from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.process import ProcessTable
from parley_stack.servers.base import ProcessSpec, http_ok
from parley_stack.servers.gobuild import GoBuilt

#: Jaeger v2.13.0: the module's own tags are v1.x (the module path has no /v2).
JAEGER_VERSION = "v1.76.0"
_MODULE = "github.com/jaegertracing/jaeger"
_COMMAND = "cmd/jaeger"

#: The most traces memory storage keeps; the oldest go first.
_MAX_TRACES = 20_000

_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: "{host}:{health}"
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
  jaeger_query:
    storage:
      traces: memstore
    # Its own spans would go to the OTLP default, localhost:4317: nothing listens there.
    enable_tracing: false
    http:
      endpoint: "{host}:{query_http}"
    grpc:
      endpoint: "{host}:{query_grpc}"

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{host}:{otlp_grpc}"
      http:
        endpoint: "{host}:{otlp_http}"

processors:
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def otlp_endpoint(config: StackConfig, protocol: str = "grpc") -> str | None:
    """Where the stack's processes send spans ("grpc": host:port, "http": a URL), or None
    while this stack's Jaeger is not running (then nothing is exported)."""
    if ProcessTable(config).running("jaeger") is None:
        return None
    if protocol == "grpc":
        return f"{config.host}:{config.port('jaeger_otlp')}"
    return f"http://{config.host}:{config.port('jaeger_otlp_http')}"


class JaegerServer(GoBuilt):
    name = "jaeger"
    module = _MODULE
    command = _COMMAND
    version = JAEGER_VERSION

    @property
    def _config_path(self) -> Path:
        return self.config.data_dir("jaeger") / "config.yaml"

    def prepare(self) -> None:
        port = self.config.port
        self._config_path.write_text(
            _CONFIG.format(
                host=self.config.host,
                health=port("jaeger_health"),
                query_http=port("jaeger_query"),
                query_grpc=port("jaeger_query_grpc"),
                otlp_grpc=port("jaeger_otlp"),
                otlp_http=port("jaeger_otlp_http"),
                max_traces=_MAX_TRACES,
            )
        )

    def processes(self) -> list[ProcessSpec]:
        host, port = self.config.host, self.config.port
        query = f"http://{host}:{port('jaeger_query')}"
        return [
            ProcessSpec(
                name="jaeger",
                argv=[str(self.binary), "--config", str(self._config_path)],
                ready=lambda: (
                    http_ok(f"http://{host}:{port('jaeger_health')}/status")
                    and http_ok(f"{query}/api/services")
                ),
                cwd=self.config.data_dir("jaeger"),
                endpoints={
                    "otlp_grpc": f"{host}:{port('jaeger_otlp')}",
                    "otlp_http": f"http://{host}:{port('jaeger_otlp_http')}",
                    "query": query,
                },
                ready_timeout_s=60,
                stop_timeout_s=10,
            )
        ]
