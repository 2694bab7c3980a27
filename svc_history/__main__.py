"""`python -m svc_history`: migrate the schema, then serve until SIGTERM.

`python -m svc_history migrate` only brings the keyspace up to the code's schema (a
Kubernetes init container or a deploy step runs it); several at once are safe.
`python -m svc_history indexer` runs the search indexer (svc_history.search.indexer) until
SIGTERM; `python -m svc_history reindex (--user USER | --all)` rebuilds the search index
from Cassandra (svc_history.search.reindex).
"""

from __future__ import annotations

import sys

from parley_core.data import run_data_service
from parley_core.server import run_until_signal
from svc_history.app import HistoryApp
from svc_history.settings import HistorySettings
from svc_history.store import MIGRATIONS


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = HistorySettings()
    if args[:1] == ["indexer"]:
        from svc_history.search.app import IndexerApp

        run_until_signal(settings, lambda: IndexerApp.start(settings), role="indexer")
    elif args[:1] == ["reindex"]:
        from svc_history.search.reindex import main as reindex

        reindex(args[1:])
    else:
        run_data_service(
            "python -m svc_history", __doc__, settings, MIGRATIONS, lambda: HistoryApp.start(settings), args
        )


if __name__ == "__main__":
    main()
