"""`parley chat --search` as a partner runs it: a subprocess talking to the local stack through
Envoy's public endpoint. A turn through the router writes the user's message; svc_history's
search indexer (which the stack runs beside svc_history) indexes it; the search finds it, with
the query's word marked in code points, and its name continues the conversation."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import pytest

from parley_stack.testing import LocalStack
from tests.integration.router.test_chat_cli import Partner, new_partner, run_chat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def partner(edge: str, local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Partner:
    """A verified account with an API key that may chat and read its history (search)."""
    made, _user_id = await new_partner(
        edge, local_stack, tmp_path_factory.mktemp("config"), scopes=("chat", "history.read")
    )
    return made


async def search_until_found(partner: Partner, word: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """`--search word --json` until the user's own message is among the hits (the indexer
    works moments after the write)."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, out, err = await run_chat(
            partner.env(), "--search", word, "--search-mode", "full_text", "--json"
        )
        assert code == 0, err
        hits = [json.loads(line) for line in out.splitlines()]
        if any(hit["message"]["author"] == "AUTHOR_USER" for hit in hits) or time.monotonic() > deadline:
            return hits
        await asyncio.sleep(0.5)


async def test_a_message_sent_through_the_router_is_found_and_its_conversation_continued(
    partner: Partner,
) -> None:
    word = f"velocipede{secrets.token_hex(3)}"
    text = f"Zoë's 🍮 crème brûlée, then a {word} ride"
    code, out, err = await run_chat(
        partner.env(), "--model", "parley-scripted", "--json", "-m", f"{text} [scripted ttft_ms=10]"
    )
    assert code == 0, err
    conversation = json.loads(out.splitlines()[0])["started"]["turn"].rpartition("/turns/")[0]

    hits = await search_until_found(partner, word)
    [mine] = [hit for hit in hits if hit["message"]["author"] == "AUTHOR_USER"]
    name, snippet = mine["message"]["name"], mine["snippet"]
    assert name.startswith(f"{conversation}/messages/")
    # The ranges count code points, past the emoji and the accented letters.
    assert [snippet[r["start"] : r["end"]] for r in mine["snippetMatches"]] == [word]

    code, out, err = await run_chat(partner.env(), "--search", word, "--search-mode", "full_text")
    assert code == 0, err
    assert f"[{word}]" in out
    assert f"  {name}" in out.splitlines()

    # The name the search printed continues the conversation: the model saw the first turn.
    code, out, err = await run_chat(
        partner.env(),
        "--model",
        "parley-scripted",
        "--conversation",
        name,
        "-m",
        "and again [scripted ttft_ms=10]",
    )
    assert code == 0, err
    assert out == f"you said: {text} | and again\n"
