"""The servers the local stack knows, in start order.

Classes are imported lazily: `parley status` should not pay for importing every server.
"""

from __future__ import annotations

import importlib

from parley_stack.config import StackConfig
from parley_stack.servers.base import Server

#: name -> "module:Class", in the order `parley up` starts them.
CATALOG: dict[str, str] = {
    # First: whether it runs decides where every later server sends its spans.
    "jaeger": "parley_stack.servers.jaeger:JaegerServer",
    "redis": "parley_stack.servers.redis:RedisServer",
    "cassandra": "parley_stack.servers.cassandra:CassandraServer",
    "pulsar": "parley_stack.servers.pulsar:PulsarServer",
    "weaviate": "parley_stack.servers.weaviate:WeaviateServer",
    "triton": "parley_stack.servers.triton:TritonServer",
    "llama": "parley_stack.servers.llama:LlamaServer",
    "svc_session": "parley_stack.servers.services:SessionService",
    "svc_history": "parley_stack.servers.services:HistoryService",
    "svc_router": "parley_stack.servers.services:RouterService",
    "svc_ledger": "parley_stack.servers.services:LedgerService",
    "web": "parley_stack.servers.web:WebServer",
    "envoy": "parley_stack.servers.envoy:EnvoyServer",
}

#: Servers a plain `parley up` leaves out, by the `--with` option that adds them. While
#: Jaeger runs, every process of the stack that can export spans is started exporting them
#: (parley_stack.servers.jaeger.otlp_endpoint). `parley install` still installs them all.
EXTRAS: dict[str, tuple[str, ...]] = {
    "tracing": ("jaeger",),
}

#: What `parley up` starts without --only or --with.
DEFAULT_UP: tuple[str, ...] = tuple(
    name for name in CATALOG if not any(name in extra for extra in EXTRAS.values())
)

#: Command-line tools the tests and benchmarks use; installed, never started.
TOOLS: dict[str, str] = {
    "buf": "parley_stack.servers.tools:BufTool",
    "kubectl": "parley_stack.servers.tools:KubectlTool",
    "ghz": "parley_stack.servers.tools:GhzTool",
    "grpcurl": "parley_stack.servers.tools:GrpcurlTool",
    "chromium": "parley_stack.servers.tools:ChromiumTool",
    "etcd": "parley_stack.servers.kube:EtcdTool",
    "kube-apiserver": "parley_stack.servers.kube:KubeApiserverTool",
}


def load(name: str, config: StackConfig) -> Server:
    """The server (or tool) called name, configured for this stack."""
    target = CATALOG.get(name) or TOOLS.get(name)
    if target is None:
        known = ", ".join([*CATALOG, *TOOLS])
        raise KeyError(f"unknown server {name!r}; known: {known}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    server: Server = cls(config)
    return server
