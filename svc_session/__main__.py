"""`python -m svc_session`: run the service until SIGTERM.

`python -m svc_session admin grant EMAIL` makes an account an admin, out of band: the
operator runs it where the service's settings (Cassandra, Redis, the key-encryption key)
are, for example `kubectl exec` into a pod, or `parley admin grant` on the local stack.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from parley_core.server import run_until_signal
from svc_session.app import SessionApp
from svc_session.settings import SessionSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svc_session", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    admin = commands.add_parser("admin", help="operator commands")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    grant = admin_commands.add_parser("grant", help="make the account with this email an admin")
    grant.add_argument("email")
    args = parser.parse_args(argv)
    settings = SessionSettings()
    if args.command == "admin":
        from svc_session.admin import grant_admin

        sys.exit(asyncio.run(grant_admin(settings, args.email)))
    run_until_signal(settings, lambda: SessionApp.start(settings))


if __name__ == "__main__":
    main()
