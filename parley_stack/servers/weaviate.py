"""Weaviate, built from its Go module (there is no Debian package and no Docker here).

One node, anonymous access, no vectorizer modules: Parley sends its own vectors. The
cluster layer (memberlist gossip, Raft) still runs with a single member and needs its own
ports; see docs/stack/weaviate.md for which listeners can be held to loopback.
"""

from __future__ import annotations

from parley_stack.servers.base import ProcessSpec, http_ok, tcp_open
from parley_stack.servers.gobuild import GoBuilt

#: The newest release the Go module proxy serves here (v1.40.x is refused); weaviate-client
#: 4.24 needs 1.27 or newer.
WEAVIATE_VERSION = "v1.35.2"
_MODULE = "github.com/weaviate/weaviate"
_COMMAND = "cmd/weaviate-server"

#: Raft stores the node name with its state; a fixed name (not the machine's host name)
#: keeps a data folder usable after the machine is renamed or replaced.
_NODE_NAME = "parley-weaviate-0"


class WeaviateServer(GoBuilt):
    name = "weaviate"
    module = _MODULE
    command = _COMMAND
    version = WEAVIATE_VERSION
    cgo = True

    def _env(self) -> dict[str, str]:
        host = self.config.host
        gossip = self.config.port("weaviate_gossip")
        raft = self.config.port("weaviate_raft")
        return {
            "PERSISTENCE_DATA_PATH": str(self.config.data_dir("weaviate")),
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
            "AUTHORIZATION_ADMINLIST_ENABLED": "false",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "API_BASED_MODULES_DISABLED": "true",
            # Without this the server reports usage to Weaviate's cloud, off loopback.
            "DISABLE_TELEMETRY": "true",
            # pprof would otherwise listen on 0.0.0.0:6060, which a second stack cannot share.
            "GO_PROFILING_DISABLE": "true",
            "PROMETHEUS_MONITORING_ENABLED": "false",
            "CLUSTER_HOSTNAME": _NODE_NAME,
            "CLUSTER_IN_LOCALHOST": "true",
            # Memberlist and both Raft listeners bind this address (default 0.0.0.0).
            "CLUSTER_BIND_ADDR": host,
            "CLUSTER_GOSSIP_BIND_PORT": str(gossip),
            "CLUSTER_DATA_BIND_PORT": str(gossip + 1),
            "RAFT_PORT": str(raft),
            "RAFT_INTERNAL_RPC_PORT": str(raft + 1),
            "RAFT_JOIN": f"{_NODE_NAME}:{raft + 1}",
            "RAFT_BOOTSTRAP_EXPECT": "1",
            "GRPC_PORT": str(self.config.port("weaviate_grpc")),
            "QUERY_DEFAULTS_LIMIT": "25",
            "LOG_LEVEL": "info",
            "LOG_FORMAT": "text",
        }

    def processes(self) -> list[ProcessSpec]:
        host = self.config.host
        http_port = self.config.port("weaviate_http")
        grpc_port = self.config.port("weaviate_grpc")
        ready_url = f"http://{host}:{http_port}/v1/.well-known/ready"
        argv = [
            str(self.binary),
            "--host", host,
            "--port", str(http_port),
            "--scheme", "http",
        ]  # fmt: skip
        return [
            ProcessSpec(
                name="weaviate",
                argv=argv,
                # REST readiness covers schema and shards; the client also needs gRPC, which
                # starts on its own goroutine, so both must answer.
                ready=lambda: http_ok(ready_url) and tcp_open(host, grpc_port),
                env=self._env(),
                cwd=self.config.data_dir("weaviate"),
                endpoints={"http": f"{host}:{http_port}", "grpc": f"{host}:{grpc_port}"},
                ready_timeout_s=120,
                stop_timeout_s=30,
            )
        ]
