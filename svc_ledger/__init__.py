"""svc_ledger: usage events priced into an exact ledger, budgets, admin reports."""
