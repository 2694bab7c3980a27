"""The wire layer of svc_router: requests in, domain calls, responses out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from parley.chat.v1 import chat_pb2
from parley_core.servicer import add_servicer
from svc_router.settings import RouterSettings

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


class ChatServiceServicer:
    """parley.chat.v1.ChatService; methods not defined here answer UNIMPLEMENTED."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings


async def register(server: grpc.aio.Server, settings: RouterSettings) -> Sequence[str]:
    """Add svc_router's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, ChatServiceServicer(settings))]
