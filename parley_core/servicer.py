"""Serving a service from its descriptor, with UNIMPLEMENTED (and details) for unbuilt methods.

A servicer is a plain class whose async methods are named like the service's RPCs. Unlike
grpcio's generated abstract base, whose placeholders are synchronous (an asyncio server
cannot await them) and all abstract (so a half-built service does not type-check),
`add_servicer` takes whatever methods the class defines, answers UNIMPLEMENTED for the
rest, and refuses a class with a method the contract does not have (a typo would
otherwise go unnoticed until a client called it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from parley_core.errors import unimplemented

__all__ = ["add_servicer"]

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_servicer(server: grpc.aio.Server, descriptor: ServiceDescriptor, servicer: object) -> str:
    """Serve `descriptor` on server with servicer's methods; returns the service's full name."""
    rpc_names = {method.name for method in descriptor.methods}
    strays = {
        name
        for name in dir(type(servicer))
        if name[:1].isupper() and callable(getattr(servicer, name)) and name not in rpc_names
    }
    if strays:
        raise TypeError(f"{type(servicer).__name__} defines {sorted(strays)}, not in {descriptor.full_name}")
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in descriptor.methods:
        behaviour = getattr(servicer, method.name, None) or _placeholder(method)
        factory = _FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            behaviour,
            request_deserializer=GetMessageClass(method.input_type).FromString,
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)
    return descriptor.full_name


def _placeholder(method: MethodDescriptor) -> Callable[..., Any]:
    full_name = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            raise unimplemented(full_name)
            yield  # pragma: no cover - makes this an async generator

        return streaming

    async def unary(request: Any, context: Any) -> Any:
        raise unimplemented(full_name)

    return unary
