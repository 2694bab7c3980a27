"""Page tokens: opaque, bound to their listing, refused when altered."""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from parley_core.errors import RpcError
from svc_history.paging import PageTokens

SECRET = b"k" * 32


def test_a_token_reads_back_to_its_position() -> None:
    tokens = PageTokens(SECRET)
    token = tokens.issue("conversations|u1", {"t": 1_700_000_000_123, "c": "abc"})

    assert tokens.read(token, "conversations|u1") == {"t": 1_700_000_000_123, "c": "abc"}
    assert tokens.read("", "conversations|u1") == {}


def _refused(tokens: PageTokens, token: str, listing: str) -> RpcError:
    with pytest.raises(RpcError) as caught:
        tokens.read(token, listing)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == ["page_token"]
    return caught.value


def test_an_altered_position_is_refused() -> None:
    tokens = PageTokens(SECRET)
    version, encoded, mac = tokens.issue("l", {"i": 100}).split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"i": 0}).encode()).decode().rstrip("=")

    _refused(tokens, f"{version}.{forged}.{mac}", "l")
    _refused(tokens, f"{version}.{encoded}.{mac[:-2]}AA", "l")
    _refused(tokens, "garbage", "l")


def test_a_token_of_another_listing_is_refused() -> None:
    tokens = PageTokens(SECRET)
    token = tokens.issue("conversations|u1|folder=work", {"i": 50})

    _refused(tokens, token, "conversations|u1|folder=home")
    _refused(tokens, token, "conversations|u2|folder=work")


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = PageTokens(b"a" * 32).issue("l", {"i": 1})

    _refused(PageTokens(b"b" * 32), token, "l")


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        PageTokens(b"short")
