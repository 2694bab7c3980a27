"""`python -m svc_router`: migrate the outbox table, then serve chat turns until SIGTERM.

`python -m svc_router migrate` only brings the keyspace up to the code's schema.
"""

from __future__ import annotations

import argparse
import sys

from parley_core.logging import configure_logging
from parley_core.migrations import run_cli
from parley_core.server import run_until_signal
from svc_router.app import RouterApp
from svc_router.events import MIGRATIONS
from svc_router.settings import RouterSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svc_router", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("migrate", help="apply the schema migrations the keyspace lacks, then exit")
    args = parser.parse_args(argv)
    settings = RouterSettings()
    if args.command == "migrate":
        configure_logging(settings.log_format, settings.log_level)
        sys.exit(
            run_cli(
                settings.cassandra_hosts,
                settings.cassandra_port,
                settings.keyspace,
                settings.replication_factor,
                MIGRATIONS,
            )
        )
    run_until_signal(settings, lambda: RouterApp.start(settings))


if __name__ == "__main__":
    main()
