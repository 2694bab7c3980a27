"""The web app's files through the stack's real Envoy: same origin as the API, a strict
policy set by the edge, and no way from a page's path to a service."""

from __future__ import annotations

import re
import struct

import httpx
import pytest

from edge_proxy.render import CONTENT_SECURITY_POLICY, WEB_HEADERS
from parley_stack.servers.web import WebServer
from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration

_IMMUTABLE = "public, max-age=31536000, immutable"


def _get(edge: str, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"http://{edge}{path}", timeout=10)


@pytest.fixture(scope="module")
def page(edge: str, local_stack: LocalStack) -> str:
    """The index.html the stack's web server serves (its current build)."""
    return (WebServer(local_stack.config).dist / "index.html").read_text()


def _security_headers(answer: httpx.Response) -> dict[str, str]:
    return {key: answer.headers.get(key, "") for key in WEB_HEADERS}


def test_the_page_comes_from_the_edge_with_a_strict_policy(edge: str, page: str) -> None:
    answer = _get(edge, "/")

    assert answer.status_code == 200
    assert answer.text == page
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert _security_headers(answer) == WEB_HEADERS
    assert answer.headers["cache-control"] == "no-cache"
    assert _get(edge, "/index.html").headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/reset-password?token=abc", "/c/123", "/settings/"])
def test_a_path_of_the_app_is_the_page(edge: str, page: str, path: str) -> None:
    answer = _get(edge, path)

    assert answer.status_code == 200
    assert answer.text == page
    assert answer.headers["cache-control"] == "no-cache"
    assert _security_headers(answer) == WEB_HEADERS


def test_the_bundles_are_script_and_style_and_kept_for_good(edge: str) -> None:
    page = _get(edge, "/").text
    [script] = re.findall(r'<script [^>]*src="(/assets/[^"]+\.js)"', page)
    [style] = re.findall(r'<link rel="stylesheet" [^>]*href="(/assets/[^"]+\.css)"', page)
    answer = _get(edge, script)
    head = _get(edge, script, "HEAD")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["cache-control"] == _IMMUTABLE
    assert _security_headers(answer) == WEB_HEADERS
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(answer.content)))
    assert _get(edge, style).headers["content-type"] == "text/css; charset=utf-8"


def test_a_missing_bundle_is_404_and_never_cached(edge: str) -> None:
    answer = _get(edge, "/assets/index-missing.js")
    listing = _get(edge, "/assets/")

    assert answer.status_code == 404
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert listing.status_code == 404  # no directory listings
    assert _get(edge, "/missing.png").status_code == 404  # a file, not a path of the app


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/parley.session.v1.SessionService/Login", 404),  # a routed, anonymous method
        ("/parley.history.v1.HistoryService/AppendMessage", 404),  # an internal one
        # jwt_authn, before routing, answers a method that needs a token first.
        ("/parley.session.v1.SessionService/GetCurrentUser", 401),
    ],
)
def test_a_get_of_a_grpc_path_reaches_no_service_and_no_file(edge: str, path: str, status: int) -> None:
    answer = _get(edge, path)

    assert answer.status_code == status
    assert "x-envoy-upstream-service-time" not in answer.headers  # answered by Envoy itself
    assert "content-security-policy" not in answer.headers  # not by the web cluster either


def test_append_message_is_still_unreachable_by_post(edge: str) -> None:
    answer = httpx.post(
        f"http://{edge}/parley.history.v1.HistoryService/AppendMessage",
        content=struct.pack(">BI", 0, 0),
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        timeout=10,
    )

    assert answer.status_code == 404
    assert "x-envoy-upstream-service-time" not in answer.headers


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/"), ("PUT", "/index.html"), ("DELETE", "/assets/x.js")]
)
def test_other_methods_on_pages_are_404(edge: str, method: str, path: str) -> None:
    answer = _get(edge, path, method)

    assert answer.status_code == 404
    assert "content-security-policy" not in answer.headers
