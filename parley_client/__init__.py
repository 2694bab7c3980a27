"""Parley's terminal client, `parley chat`: the public gRPC API as a partner uses it.

It talks to the public endpoint only, with the stubs generated from `protos/`, and imports
nothing else of Parley. `chat` is the example to read first; its private modules are
signing in (`_auth`), errors as one line (`_errors`), what the terminal shows (`_render`),
searching the caller's messages (`_search`) and a turn's resume bookkeeping (`_turn`).
"""

from parley_client.chat import ChatClient, main

__all__ = ["ChatClient", "main"]
