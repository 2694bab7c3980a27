"""`python -m svc_history`: migrate the schema, then serve until SIGTERM.

`python -m svc_history migrate` only brings the keyspace up to the code's schema (a
Kubernetes init container or a deploy step runs it); several at once are safe.
"""

from __future__ import annotations

from parley_core.data import run_data_service
from svc_history.app import HistoryApp
from svc_history.settings import HistorySettings
from svc_history.store import MIGRATIONS


def main(argv: list[str] | None = None) -> None:
    settings = HistorySettings()
    run_data_service(
        "python -m svc_history", __doc__, settings, MIGRATIONS, lambda: HistoryApp.start(settings), argv
    )


if __name__ == "__main__":
    main()
