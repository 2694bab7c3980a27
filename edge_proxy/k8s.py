"""`python -m edge_proxy.k8s`: the edge's configuration for Kubernetes (k8s/base/envoy/envoy.yaml).

The same template as the local stack, with the cluster's addresses: each service by the DNS
name of its headless Service (Envoy's STRICT_DNS clusters resolve every ready pod and
balance and health-check them one by one), the admin interface on the pod's loopback, and
one trusted hop in front of Envoy (the cloud load balancer appends the client's address to
X-Forwarded-For). Every input is passed explicitly, so a field added to `EdgeInputs` fails
here until k8s/ decides its value.

tests/k8s/test_envoy_config.py checks that the committed file is a fresh rendering.
"""

from __future__ import annotations

import sys

from edge_proxy.render import Address, EdgeInputs, render

__all__ = ["NAMESPACE", "PORTS", "k8s_edge_inputs", "main", "service_host"]

#: The namespace k8s/base puts everything in.
NAMESPACE = "parley"

#: The ports of the pods and Services in k8s/ (one place; the manifests use the same numbers).
PORTS = {
    "envoy_public": 8080,
    "envoy_internal": 8081,
    "envoy_admin": 9901,
    "grpc": 50051,  # every service's gRPC port
    "session_jwks": 8082,
    "session_internal": 50052,
    "web_http": 8080,
    "otlp": 4317,  # the collector's OTLP/gRPC Service port
}

#: Trusted proxies in front of Envoy: the cloud's load balancer.
XFF_TRUSTED_HOPS = 1


def service_host(service: str) -> str:
    """The cluster DNS name of a Service in the namespace."""
    return f"{service}.{NAMESPACE}.svc.cluster.local"


def k8s_edge_inputs() -> EdgeInputs:
    """The edge's inputs inside the cluster."""
    return EdgeInputs(
        listen=Address("0.0.0.0", PORTS["envoy_public"]),  # noqa: S104 - the pod's public port
        admin=Address("127.0.0.1", PORTS["envoy_admin"]),
        svc_session=Address(service_host("svc-session"), PORTS["grpc"]),
        svc_history=Address(service_host("svc-history"), PORTS["grpc"]),
        svc_router=Address(service_host("svc-router"), PORTS["grpc"]),
        svc_ledger=Address(service_host("svc-ledger"), PORTS["grpc"]),
        session_jwks=Address(service_host("svc-session"), PORTS["session_jwks"]),
        rate_limit=Address(service_host("svc-session"), PORTS["session_internal"]),
        web=Address(service_host("web"), PORTS["web_http"]),
        internal=Address("0.0.0.0", PORTS["envoy_internal"]),  # noqa: S104 - NetworkPolicy keeps it in
        issuer="https://parley.local/session",
        audience="parley",
        xff_num_trusted_hops=XFF_TRUSTED_HOPS,
        # The OpenTelemetry Collector (k8s/base/otel-collector.yaml): Envoy's span of each
        # request is the root (or the client's child) of the services' spans.
        otlp=Address(service_host("otel-collector"), PORTS["otlp"]),
    )


def main() -> None:
    sys.stdout.write(render(k8s_edge_inputs()))


if __name__ == "__main__":
    main()
