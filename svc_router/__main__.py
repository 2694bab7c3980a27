"""`python -m svc_router`: migrate the outbox table, then serve chat turns until SIGTERM.

`python -m svc_router migrate` only brings the keyspace up to the code's schema.
"""

from __future__ import annotations

from parley_core.data import run_data_service
from svc_router.app import RouterApp
from svc_router.events import MIGRATIONS
from svc_router.settings import RouterSettings


def main(argv: list[str] | None = None) -> None:
    settings = RouterSettings()
    run_data_service(
        "python -m svc_router", __doc__, settings, MIGRATIONS, lambda: RouterApp.start(settings), argv
    )


if __name__ == "__main__":
    main()
