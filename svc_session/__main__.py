"""`python -m svc_session`: run the service until SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import uvloop

from parley_core.logging import configure_logging
from svc_session.app import SessionApp
from svc_session.settings import SessionSettings


async def _serve(settings: SessionSettings) -> None:
    app = await SessionApp.start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.stop()


def main() -> None:
    settings = SessionSettings()
    configure_logging(settings.log_format, settings.log_level)
    uvloop.run(_serve(settings))


if __name__ == "__main__":
    main()
