"""`python -m parley_client`: the same as `parley chat`, for a program that has only the client."""

from parley_client.chat import main

raise SystemExit(main())
