"""svc_history: conversations and messages, sharing, search, export and erasure."""
