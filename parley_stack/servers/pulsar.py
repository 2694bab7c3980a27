"""Pulsar for the local stack, in one of two variants (`StackConfig.pulsar`).

- "lite" (default): the native broker shipped in the `pulsar-lite` PyPI package. It starts
  in well under a second and idles at ~20 MB, speaks the Pulsar binary protocol, but has no
  admin REST API (see docs/stack/pulsar.md for what it supports).
- "apache": Apache Pulsar standalone (broker, one bookie, RocksDB metadata) from Maven
  Central jars, for checking Parley against the real thing.

Both run as the process "pulsar" on `config.port("pulsar")`, so clients never need to know
which one they talk to.
"""

from __future__ import annotations

import json
import shutil
import socket
import string
import struct
import urllib.error
import urllib.request
from pathlib import Path

from parley_core.events import NAMESPACE, TENANT, TOPICS
from parley_stack.config import StackConfig
from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.debian import apt_install
from parley_stack.servers.wheels import install_wheel

# TENANT/NAMESPACE (parley_core.events, where the services read them) are re-exported for the
# stack's tests; the lite broker accepts any tenant and namespace, Apache's are created below.
__all__ = ["NAMESPACE", "TENANT", "PulsarServer", "pulsar_handshake"]

LITE_VERSION = "0.2.0"
PULSAR_VERSION = "4.0.7"  # 4.0.8's jetcd-core-shaded and pulsar-opentelemetry are not served
LOG4J_VERSION = "2.23.1"  # the version pulsar-broker's log4j-slf4j2-impl was built with
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

CLUSTER = "standalone"  # clusterName in pulsar_files/standalone.conf

_FILES = Path(__file__).resolve().parent / "pulsar_files"

#: JVM flags of upstream `bin/pulsar`: BookKeeper and Netty reach into JDK internals, and the
#: bookie must find its ledgers through Pulsar's metadata store (RocksDB) instead of ZooKeeper.
_JVM_FLAGS = (
    "-Xms64m",
    "-Xmx384m",
    "-XX:MaxDirectMemorySize=256m",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.zip=ALL-UNNAMED",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-opens", "java.base/sun.net=ALL-UNNAMED",
    "--add-opens", "java.management/sun.management=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dbookkeeper.metadata.bookie.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataBookieDriver",
    "-Dbookkeeper.metadata.client.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataClientDriver",
    "-Dpulsar.allocator.exit_on_oom=true",
)  # fmt: skip


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _connect_frame() -> bytes:
    """A Pulsar CONNECT command, hand-encoded: BaseCommand{type=CONNECT, connect{client_version,
    protocol_version=21}} behind the frame's total and command sizes."""
    version = b"parley-stack-probe"
    connect = b"\x0a" + _varint(len(version)) + version + b"\x20" + _varint(21)
    command = b"\x08\x02" + b"\x12" + _varint(len(connect)) + connect
    return struct.pack(">II", len(command) + 4, len(command)) + command


def pulsar_handshake(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the broker answers CONNECT with CONNECTED.

    An open port alone is not enough: the broker accepts TCP before its topic service is
    up. The handshake needs no client library (the stack's own process may lack one).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_connect_frame())
            reply = b""
            while len(reply) < 10:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    # After the two sizes comes BaseCommand field 1 (type) = 3 (CONNECTED).
    return reply[8:10] == b"\x08\x03"


def _http(method: str, url: str, body: object | None = None, timeout: float = 10.0) -> int:
    """HTTP status of one request to the admin API (0 when nothing answered)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback only
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


def _fill(template: str, **values: object) -> str:
    return string.Template((_FILES / template).read_text()).substitute(values)


class _Lite:
    """pulsar-lite's broker binary, from its wheel, in a folder of its own."""

    def __init__(self, config: StackConfig, cache: Path) -> None:
        self.config = config
        self.target = cache / f"lite-{LITE_VERSION}"

    def binary(self) -> Path | None:
        found = self.target / "pulsar_lite" / "bin" / "pulsar-lite"
        return found if found.is_file() else None

    def is_installed(self) -> bool:
        return self.binary() is not None

    def install(self, progress: Progress) -> None:
        # No dependencies: only the broker binary is used; the Python client wrapper (and
        # the pulsar-client it pins) would be 10 MB more for nothing.
        install_wheel(self.config, progress, f"pulsar-lite=={LITE_VERSION}", self.target)
        if self.binary() is None:
            raise RuntimeError(f"pulsar-lite {LITE_VERSION} installed no pulsar_lite/bin/pulsar-lite")

    def process(self) -> ProcessSpec:
        host, port = self.config.host, self.config.port("pulsar")
        data = self.config.data_dir("pulsar") / "lite"
        binary = self.binary()
        argv = [
            str(binary or "pulsar-lite"),
            "--config", str(_FILES / "pulsar-lite.toml"),
            "--addr", f"{host}:{port}",
            "--db-path", str(data),
        ]  # fmt: skip
        return ProcessSpec(
            name="pulsar",
            argv=argv,
            ready=lambda: pulsar_handshake(host, port),
            cwd=data,  # it looks for ./pulsar-lite.toml when --config is missing
            endpoints={"pulsar": f"pulsar://{host}:{port}"},
            ready_timeout_s=30,
            stop_timeout_s=15,
        )

    def prepare(self) -> None:
        (self.config.data_dir("pulsar") / "lite").mkdir(parents=True, exist_ok=True)

    def after_ready(self) -> None:
        """Nothing: pulsar-lite creates tenants, namespaces and topics on first use."""


class _Apache:
    """Apache Pulsar standalone: jars collected by Maven, run with the system's Java 17."""

    def __init__(self, config: StackConfig, cache: Path) -> None:
        self.config = config
        self.home = cache / f"apache-{PULSAR_VERSION}"
        self.lib = self.home / "lib"

    @property
    def data(self) -> Path:
        return self.config.data_dir("pulsar") / "apache"

    def is_installed(self) -> bool:
        return (self.lib / ".complete").exists() and shutil.which("java") is not None

    def install(self, progress: Progress) -> None:
        if shutil.which("java") is None or shutil.which("mvn") is None:
            apt_install(progress, "openjdk-17-jre-headless", "maven")
        self.home.mkdir(parents=True, exist_ok=True)
        pom = self.home / "pom.xml"
        pom.write_text(_fill("pom.xml", pulsar_version=PULSAR_VERSION, log4j_version=LOG4J_VERSION))
        # Collect into a fresh folder and rename at the end: a half-copied lib/ never looks done.
        partial = self.home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        progress.run(
            f"Apache Pulsar {PULSAR_VERSION}: collect jars (mvn)",
            ["mvn", "-B", "-q", "-f", str(pom), f"-Dmaven.repo.local={self.home / 'm2'}",
             f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={partial}"],
            log_path=self.home / "install.log",
        )  # fmt: skip
        if not list(partial.glob(f"pulsar-broker-{PULSAR_VERSION}.jar")):
            raise RuntimeError(f"mvn collected no pulsar-broker jar; see {self.home / 'install.log'}")
        shutil.rmtree(self.lib, ignore_errors=True)
        partial.rename(self.lib)
        (self.lib / ".complete").touch()

    def process(self) -> ProcessSpec:
        host = self.config.host
        broker, web = self.config.port("pulsar"), self.config.port("pulsar_http")
        argv = [
            shutil.which("java") or "java",
            *_JVM_FLAGS,
            f"-Dlog4j.configurationFile={_FILES / 'log4j2.xml'}",
            "-cp", f"{self.lib}/*",
            "org.apache.pulsar.PulsarStandaloneStarter",
            "--config", str(self.data / "standalone.conf"),
            "--no-functions-worker",
            "--no-stream-storage",
            "--metadata-dir", str(self.data / "metadata"),
            "--bookkeeper-dir", str(self.data / "bookkeeper"),
            "--bookkeeper-port", str(self.config.port("pulsar_bookie")),
            "--advertised-address", host,
        ]  # fmt: skip
        health = f"http://{host}:{web}/admin/v2/brokers/health"
        return ProcessSpec(
            name="pulsar",
            argv=argv,
            # The health check publishes to and reads back from a topic: broker, bookie and
            # metadata store all work. The first one takes a few seconds (it creates the topic).
            ready=lambda: _http("GET", health) == 200,
            cwd=self.data,  # standalone writes a few relative paths (data/) of its own
            endpoints={"pulsar": f"pulsar://{host}:{broker}", "http": f"http://{host}:{web}"},
            ready_timeout_s=180,
            stop_timeout_s=30,
        )

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        conf = _fill(
            "standalone.conf",
            host=self.config.host,
            broker_port=self.config.port("pulsar"),
            web_port=self.config.port("pulsar_http"),
        )
        (self.data / "standalone.conf").write_text(conf)

    def after_ready(self) -> None:
        """Create Parley's tenant, namespace and topics; 409 (already there) is fine.

        The broker deletes topics that have no subscription after a minute of inactivity
        (`brokerDeleteInactiveTopicsEnabled`), so the namespace turns that off: the topics
        stay until their consumers subscribe.
        """
        admin = f"http://{self.config.host}:{self.config.port('pulsar_http')}/admin/v2"
        requests: list[tuple[str, str, object]] = [
            ("PUT", f"{admin}/tenants/{TENANT}", {"allowedClusters": [CLUSTER]}),
            ("PUT", f"{admin}/namespaces/{NAMESPACE}", {}),
            (
                "POST",
                f"{admin}/namespaces/{NAMESPACE}/inactiveTopicPolicies",
                {
                    "inactiveTopicDeleteMode": "delete_when_no_subscriptions",
                    "maxInactiveDurationSeconds": 60,
                    "deleteWhileInactive": False,
                },
            ),
            *(("PUT", f"{admin}/persistent/{NAMESPACE}/{topic}", None) for topic in TOPICS),
        ]
        for method, url, body in requests:
            status = _http(method, url, body)
            if status not in (200, 204, 409):
                raise RuntimeError(f"{method} {url} answered {status or 'nothing'}")


class PulsarServer(Server):
    name = "pulsar"

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        if config.pulsar == "lite":
            self._variant: _Lite | _Apache = _Lite(config, self.cache)
        elif config.pulsar == "apache":
            self._variant = _Apache(config, self.cache)
        else:
            raise ValueError(f"config.pulsar must be 'lite' or 'apache', not {config.pulsar!r}")

    def is_installed(self) -> bool:
        return self._variant.is_installed()

    def install(self, progress: Progress) -> None:
        self._variant.install(progress)

    def processes(self) -> list[ProcessSpec]:
        return [self._variant.process()]

    def prepare(self) -> None:
        self._variant.prepare()

    def after_ready(self) -> None:
        self._variant.after_ready()
