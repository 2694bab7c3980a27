"""The wire layer of svc_session: requests in, domain calls, responses out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from parley.session.v1 import session_pb2
from parley_core.servicer import add_servicer
from svc_session.settings import SessionSettings

SERVICE = session_pb2.DESCRIPTOR.services_by_name["SessionService"]


class SessionServiceServicer:
    """parley.session.v1.SessionService; methods not defined here answer UNIMPLEMENTED."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings


async def register(server: grpc.aio.Server, settings: SessionSettings) -> Sequence[str]:
    """Add svc_session's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, SessionServiceServicer(settings))]
