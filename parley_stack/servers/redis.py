"""Redis from Debian's redis-server package."""

from __future__ import annotations

import shutil

from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.debian import apt_install


def _redis_ready(host: str, port: int) -> bool:
    """PING answers PONG (the port alone opens before the dataset is loaded)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(Server):
    name = "redis"

    def is_installed(self) -> bool:
        return shutil.which("redis-server") is not None

    def install(self, progress: Progress) -> None:
        apt_install(progress, "redis-server")

    def processes(self) -> list[ProcessSpec]:
        host, port = self.config.host, self.config.port("redis")
        data = self.config.data_dir("redis")
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--bind", host,
            "--port", str(port),
            "--dir", str(data),
            "--save", "",
            "--appendonly", "yes",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        return [
            ProcessSpec(
                name="redis",
                argv=argv,
                ready=lambda: _redis_ready(host, port),
                endpoints={"redis": f"{host}:{port}"},
                ready_timeout_s=30,
            )
        ]
