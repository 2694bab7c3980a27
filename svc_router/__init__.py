"""svc_router: the chat turn: context, model routing, streaming, failover, cancel, resume."""
