"""What every Parley service shares: settings, logging, the gRPC server and error statuses.

Kept small on purpose; a service's own logic lives in its own package.
"""
