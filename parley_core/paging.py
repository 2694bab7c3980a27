"""AIP-158 pagination helpers: page sizes with a default and a maximum, opaque tokens."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from parley_core.errors import FieldViolation, invalid_argument

__all__ = [
    "decode_token",
    "encode_token",
    "offset_page",
    "page_size",
]


def page_size(requested: int, default: int, maximum: int) -> int:
    """The size to use: default for 0, capped at maximum; negative is INVALID_ARGUMENT."""
    if requested < 0:
        raise invalid_argument([FieldViolation("page_size", "must not be negative")])
    return default if requested == 0 else min(requested, maximum)


def encode_token(position: dict[str, Any]) -> str:
    """An opaque token for the position after the last item of a page."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    """The position in a token from encode_token; {} for ""; INVALID_ARGUMENT for garbage."""
    if not token:
        return {}
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    if not isinstance(position, dict):
        raise invalid_argument([FieldViolation("page_token", "is not a token this API returned")])
    return position


def offset_page(items: list[Any], size: int, token: str) -> tuple[list[Any], str]:
    """A page of an in-memory, already ordered list (small per-user collections)."""
    offset = decode_token(token).get("offset", 0)
    if not isinstance(offset, int) or offset < 0:
        raise invalid_argument([FieldViolation("page_token", "is not a token this API returned")])
    page = items[offset : offset + size]
    more = offset + size < len(items)
    return page, encode_token({"offset": offset + size}) if more else ""
