"""Page tokens a client cannot forge or move to another listing.

A token is `1.<position>.<mac>`: the position (compact JSON, base64url) and an HMAC-SHA256
over the listing it belongs to and the position. The listing (who lists, what, with which
filters) is not in the token, only in the MAC, so a token altered by a client, or sent
with another listing's parameters, fails the check and is INVALID_ARGUMENT. Tokens reveal
where a page ended (a time, an id), which is the caller's own data; they are not secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from parley_core.errors import FieldViolation, RpcError, invalid_argument

__all__ = ["PageTokens", "derive_key"]

_VERSION = "1"


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose, so one configured secret never signs two kinds of thing."""
    return hmac.new(secret, f"parley history {purpose}".encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def bad_token(field: str = "page_token") -> RpcError:
    return invalid_argument([FieldViolation(field, "is not a token this API returned for this listing")])


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the page token key must hold at least 16 bytes")
        self._key = derive_key(secret, "page tokens v1")

    def _mac(self, listing: str, position: str) -> str:
        message = f"{_VERSION}\n{listing}\n{position}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, listing: str, position: dict[str, Any]) -> str:
        """A token for the page after `position` of `listing`."""
        encoded = _b64(json.dumps(position, separators=(",", ":"), sort_keys=True).encode())
        return f"{_VERSION}.{encoded}.{self._mac(listing, encoded)}"

    def read(self, token: str, listing: str) -> dict[str, Any]:
        """The position in a token this listing issued; {} for ""; INVALID_ARGUMENT otherwise."""
        if not token:
            return {}
        version, _, rest = token.partition(".")
        encoded, _, mac = rest.partition(".")
        if version != _VERSION or not encoded or not hmac.compare_digest(mac, self._mac(listing, encoded)):
            raise bad_token()
        try:
            position = json.loads(_unb64(encoded))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            position = None
        if not isinstance(position, dict):
            raise bad_token()
        return position
