"""The wire layer of svc_ledger: requests in, domain calls, responses out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from parley.ledger.v1 import ledger_pb2
from parley_core.servicer import add_servicer
from svc_ledger.settings import LedgerSettings

SERVICE = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"]


class LedgerServiceServicer:
    """parley.ledger.v1.LedgerService; methods not defined here answer UNIMPLEMENTED."""

    def __init__(self, settings: LedgerSettings) -> None:
        self.settings = settings


async def register(server: grpc.aio.Server, settings: LedgerSettings) -> Sequence[str]:
    """Add svc_ledger's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, LedgerServiceServicer(settings))]
