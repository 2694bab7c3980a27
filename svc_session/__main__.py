"""`python -m svc_session`: run the service until SIGTERM."""

from __future__ import annotations

from parley_core.server import run_until_signal
from svc_session.app import SessionApp
from svc_session.settings import SessionSettings


def main() -> None:
    settings = SessionSettings()
    run_until_signal(settings, lambda: SessionApp.start(settings))


if __name__ == "__main__":
    main()
