"""`python -m svc_session`: run the service until SIGTERM."""

from __future__ import annotations

import grpc

from parley_core.server import run_service
from svc_session.servicer import register
from svc_session.settings import SessionSettings


def main() -> None:
    settings = SessionSettings()

    async def add(server: grpc.aio.Server) -> list[str]:
        return list(await register(server, settings))

    run_service(settings, add)


if __name__ == "__main__":
    main()
