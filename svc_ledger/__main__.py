"""`python -m svc_ledger`: migrate, then price usage events and serve the ledger until SIGTERM.

`python -m svc_ledger migrate` only brings the keyspace up to the code's schema.
"""

from __future__ import annotations

from parley_core.data import run_data_service
from svc_ledger.app import LedgerApp
from svc_ledger.settings import LedgerSettings
from svc_ledger.store import MIGRATIONS


def main(argv: list[str] | None = None) -> None:
    settings = LedgerSettings()
    run_data_service(
        "python -m svc_ledger", __doc__, settings, MIGRATIONS, lambda: LedgerApp.start(settings), argv
    )


if __name__ == "__main__":
    main()
