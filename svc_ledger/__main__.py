"""`python -m svc_ledger`: run the service until SIGTERM."""

from __future__ import annotations

import grpc

from parley_core.server import run_service
from svc_ledger.servicer import register
from svc_ledger.settings import LedgerSettings


def main() -> None:
    settings = LedgerSettings()

    async def add(server: grpc.aio.Server) -> list[str]:
        return list(await register(server, settings))

    run_service(settings, add)


if __name__ == "__main__":
    main()
