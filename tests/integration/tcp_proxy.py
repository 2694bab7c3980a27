"""A TCP forwarder in front of a real server, so a test can take the server away from one
client (cut) without stopping it for every other test."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._port = 0
        #: Connections accepted so far (a client that never tries is never counted).
        self.accepted = 0

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> int:
        """Listen on a free loopback port (or the port it had, after a cut); returns it."""
        self._cut = False
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def cut(self) -> None:
        """Stop listening and drop every open connection: the server is gone for the client."""
        self._cut = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        # Held from the first moment, so a cut during the upstream connect aborts it too.
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except BaseException as error:
            writer.transport.abort()
            self._writers.discard(writer)
            if isinstance(error, OSError):
                return  # the server is down too: the client sees its connection dropped
            raise
        if self._cut:
            for side in (writer, upstream_writer):
                side.transport.abort()
                self._writers.discard(side)
            return
        self._writers.add(upstream_writer)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)
