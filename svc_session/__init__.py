"""svc_session: identity: accounts, tokens, API keys, rate limits."""
