"""Apache Cassandra 5.0 from Maven Central, one node or a three-node ring on loopback.

There is no Debian package and no Docker: Maven collects `cassandra-all` and its runtime
jars into the cache, and each node runs `java ... CassandraDaemon` straight from that
folder with a cassandra.yaml written by `prepare`. Cassandra 5.0 is the first release that
runs on Java 17, which is the JDK Debian 12 ships.

With `cassandra_auth` the nodes ask clients to sign in (PasswordAuthenticator), as
cass-operator's datacenters do; the role is Cassandra's default superuser, cassandra/cassandra.
"""

from __future__ import annotations

import functools
import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from string import Template

from parley_stack.config import StackConfig
from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.debian import apt_install
from parley_stack.stack import StackError

VERSION = "5.0.8"
JAVA = Path("/usr/bin/java")
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
_FILES = Path(__file__).resolve().parent / "cassandra_files"

#: Per node: two cores are shared by up to three JVMs and everything else of the stack.
#: The heap starts small because Cassandra mlockall()s what is mapped at start-up (it runs
#: as root here), so a large -Xms would be resident for good.
HEAP_START = "64m"
HEAP = "512m"
DIRECT_MEMORY = "256m"
PROCESSORS = 2

#: The superuser Cassandra creates at its first start when it has no roles.
SUPERUSER = "cassandra"
SUPERUSER_PASSWORD = "cassandra"  # noqa: S105 - Cassandra's well-known default, loopback only

# CQL native protocol v4 (every 5.0 server speaks it; v5 adds framing we do not need).
_CQL_VERSION = 0x04
_OP_STARTUP, _OP_READY, _OP_AUTHENTICATE, _OP_QUERY, _OP_RESULT = 0x01, 0x02, 0x03, 0x07, 0x08
_OP_AUTH_RESPONSE, _OP_AUTH_SUCCESS = 0x0F, 0x10
_CONSISTENCY_ONE = 0x0001
_AUTH = {"authenticator": "PasswordAuthenticator", "authorizer": "CassandraAuthorizer"}
_NO_AUTH = {"authenticator": "AllowAllAuthenticator", "authorizer": "AllowAllAuthorizer"}
_HEADER = struct.Struct(">BBhBi")  # version, flags, stream, opcode, body length


@dataclass(frozen=True)
class _Node:
    name: str
    address: str
    token: int


def _tokens(count: int) -> list[int]:
    """Evenly spaced Murmur3 tokens, so a ring of `count` fixed-token nodes is balanced."""
    step = 2**64 // count
    return [-(2**63) + index * step for index in range(count)]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        data += chunk
    return data


def _cql_call(sock: socket.socket, opcode: int, body: bytes) -> int:
    """Send one request frame on stream 0 and return the response's opcode."""
    sock.sendall(_HEADER.pack(_CQL_VERSION, 0, 0, opcode, len(body)) + body)
    version, _flags, _stream, response, length = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    _recv_exact(sock, length)
    if version != 0x80 | _CQL_VERSION:
        raise ConnectionError(f"unexpected protocol version byte {version:#x}")
    return int(response)


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">H", len(raw)) + raw


def _sign_in(sock: socket.socket, user: str, password: str) -> bool:
    """Answer AUTHENTICATE with a SASL PLAIN token; True when the node accepts it."""
    token = b"\0" + user.encode() + b"\0" + password.encode()
    return _cql_call(sock, _OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token) == _OP_AUTH_SUCCESS


def _cql_ready(host: str, port: int, credentials: tuple[str, str] | None = None) -> bool:
    """The node answers CQL: STARTUP gives READY and a query of system.local gives a RESULT.

    The native transport only listens once the node has joined the ring, but a query is the
    signal that matters to a client (an ERROR here means the node is still not serving).
    A node that authenticates answers STARTUP with AUTHENTICATE: then credentials (user,
    password) must sign in (SASL PLAIN), which also waits for the node to have created its
    default superuser, a little after it starts serving.
    """
    startup = struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")
    query = b"SELECT release_version FROM system.local"
    query_body = struct.pack(">i", len(query)) + query + struct.pack(">HB", _CONSISTENCY_ONE, 0)
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            answer = _cql_call(sock, _OP_STARTUP, startup)
            if answer == _OP_AUTHENTICATE:
                if credentials is None or not _sign_in(sock, *credentials):
                    return False
            elif answer != _OP_READY:
                return False
            return _cql_call(sock, _OP_QUERY, query_body) == _OP_RESULT
    except (OSError, struct.error):
        return False


def credentials(config: StackConfig) -> tuple[str, str] | None:
    """(user, password) that clients of this stack's Cassandra sign in with; None where it
    does not authenticate."""
    return (SUPERUSER, SUPERUSER_PASSWORD) if config.cassandra_auth else None


class CassandraServer(Server):
    name = "cassandra"

    @property
    def _lib(self) -> Path:
        return self.cache / "lib"

    def is_installed(self) -> bool:
        return JAVA.exists() and (self._lib / f"cassandra-all-{VERSION}.jar").exists()

    def install(self, progress: Progress) -> None:
        """Copy cassandra-all and its runtime jars into lib/ with Maven's dependency plugin.

        Maven's local repository lives in the cache too, so nothing is written to ~/.m2 and a
        second install (after a version bump, say) only fetches what changed. The jars land
        in a scratch folder that replaces lib/ only once Maven has succeeded.
        """
        packages = [
            package
            for present, package in (
                (JAVA.exists(), "openjdk-17-jre-headless"),
                (shutil.which("mvn"), "maven"),
            )
            if not present
        ]
        if packages:
            apt_install(progress, *packages)
        build = self.cache / "build"
        build.mkdir(exist_ok=True)
        pom = (_FILES / "pom.xml").read_text().replace("@CASSANDRA_VERSION@", VERSION)
        (build / "pom.xml").write_text(pom)
        partial = self.cache / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        argv = [
            shutil.which("mvn") or "mvn",
            "--batch-mode",
            "--no-transfer-progress",
            "-f", str(build / "pom.xml"),
            f"-Dmaven.repo.local={self.cache / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        progress.run(f"fetch Cassandra {VERSION} jars (mvn)", argv, log_path=self.cache / "install.log")
        shutil.rmtree(self._lib, ignore_errors=True)
        partial.rename(self._lib)

    def _nodes(self) -> list[_Node]:
        """One node on config.host, or a ring on 127.0.0.1..N (same ports, one address each)."""
        count = self.config.cassandra_nodes
        if count < 1:
            raise ValueError(f"cassandra_nodes must be at least 1, not {count}")
        tokens = _tokens(count)
        if count == 1:
            return [_Node("cassandra-1", self.config.host, tokens[0])]
        return [_Node(f"cassandra-{i + 1}", f"127.0.0.{i + 1}", tokens[i]) for i in range(count)]

    def _yaml_path(self, node: _Node) -> Path:
        return self.config.data_dir(node.name) / "cassandra.yaml"

    def _rackdc_path(self, node: _Node) -> Path:
        return self.config.data_dir(node.name) / "cassandra-rackdc.properties"

    def _argv(self, node: _Node) -> list[str]:
        storage = self.config.data_dir(node.name)
        # Cassandra creates its default superuser 10 s after it starts serving; clients of a
        # node that authenticates cannot sign in before.
        auth = ["-Dcassandra.superuser_setup_delay_ms=500"] if self.config.cassandra_auth else []
        rackdc = self._rackdc_path(node).as_uri()
        dc = [f"-Dcassandra-rackdc.properties={rackdc}"] if self.config.cassandra_dc else []
        return [
            str(JAVA),
            f"@{_FILES / 'jvm17-server.options'}",
            f"-Xms{HEAP_START}",
            f"-Xmx{HEAP}",
            f"-XX:MaxDirectMemorySize={DIRECT_MEMORY}",
            f"-XX:ActiveProcessorCount={PROCESSORS}",
            f"-Dcassandra.available_processors={PROCESSORS}",
            f"-Dcassandra.config={self._yaml_path(node).as_uri()}",
            f"-Dcassandra.storagedir={storage}",
            # Without it the daemon closes stdout and stderr, which are the stack's log file.
            "-Dcassandra-foreground=yes",
            f"-Dlogback.configurationFile={_FILES / 'logback.xml'}",
            # Loopback nodes: no point waiting for gossip to settle or the ring to quiesce.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            # On TERM a node tells its peers it is going and then waits (2 s by default) for
            # the news to spread; on loopback it arrives at once.
            "-Dcassandra.shutdown_announce_in_ms=200",
            *auth,
            *dc,
            "-cp", f"{self._lib}/*",
            MAIN_CLASS,
        ]  # fmt: skip

    def processes(self) -> list[ProcessSpec]:
        cql_port = self.config.port("cassandra_cql")
        return [
            ProcessSpec(
                name=node.name,
                argv=self._argv(node),
                ready=functools.partial(_cql_ready, node.address, cql_port, credentials(self.config)),
                cwd=self.config.data_dir(node.name),
                endpoints={"cql": f"{node.address}:{cql_port}"},
                ready_timeout_s=180,
                stop_timeout_s=60,
            )
            for node in self._nodes()
        ]

    def _check_ring_size(self) -> None:
        """Refuse to start a ring of another size on the data of an earlier one.

        Node 1 remembers its peers in system.peers: alone after being one of three, it still
        sends two thirds of the token range to peers that never come, and writes fail with
        Unavailable long after start-up. Failing here names the cause instead.
        """
        marker = self.config.data_dir("cassandra-1") / "parley-ring-size"
        count = str(self.config.cassandra_nodes)
        if marker.exists() and marker.read_text().strip() != count:
            folders = self.config.run_dir / "data" / "cassandra-*"
            raise StackError(
                f"the Cassandra data in {folders} belongs to a ring of {marker.read_text().strip()} "
                f"node(s), not {count}; stop Cassandra and remove those folders to switch"
            )
        marker.write_text(count + "\n")

    def prepare(self) -> None:
        """Write each node's cassandra.yaml (tokens only count on a node's first start)."""
        self._check_ring_size()
        template = Template((_FILES / "cassandra.yaml").read_text())
        storage_port = self.config.port("cassandra_storage")
        nodes = self._nodes()
        for node in nodes:
            text = template.substitute(
                initial_token=node.token,
                seeds=f"{nodes[0].address}:{storage_port}",
                address=node.address,
                storage_port=storage_port,
                cql_port=self.config.port("cassandra_cql"),
                **(_AUTH if self.config.cassandra_auth else _NO_AUTH),
                snitch="GossipingPropertyFileSnitch" if self.config.cassandra_dc else "SimpleSnitch",
            )
            self._yaml_path(node).write_text(text)
            if self.config.cassandra_dc:
                self._rackdc_path(node).write_text(f"dc={self.config.cassandra_dc}\nrack=rack1\n")
