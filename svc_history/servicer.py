"""The wire layer of svc_history: requests in, domain calls, responses out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from parley.history.v1 import history_pb2
from parley_core.servicer import add_servicer
from svc_history.settings import HistorySettings

SERVICE = history_pb2.DESCRIPTOR.services_by_name["HistoryService"]


class HistoryServiceServicer:
    """parley.history.v1.HistoryService; methods not defined here answer UNIMPLEMENTED."""

    def __init__(self, settings: HistorySettings) -> None:
        self.settings = settings


async def register(server: grpc.aio.Server, settings: HistorySettings) -> Sequence[str]:
    """Add svc_history's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, HistoryServiceServicer(settings))]
