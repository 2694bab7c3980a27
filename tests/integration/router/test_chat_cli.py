"""`parley chat` as a partner runs it: a subprocess talking to the local stack through Envoy's
public endpoint, with the scripted model. Two turns of one conversation, Ctrl-C mid-turn, and
a connection cut mid-turn that the client resumes without repeating or losing a word."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import stat
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from parley.session.v1 import session_pb2
from parley_core.budgets import BudgetLimits, BudgetScope, BudgetState
from parley_core.stubs import session_stub
from parley_stack.config import REPO_ROOT
from parley_stack.testing import LocalStack
from tests.integration.session.helpers import PASSWORD, register_verified
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

#: A turn the scripted model answers slowly: 5 words a second, 200 of them.
SLOW = "[scripted tokens_per_second=5 reply_tokens=200]"


@dataclass(frozen=True)
class Partner:
    """A verified account with an API key for chat, and where the public endpoint is."""

    edge: str
    email: str
    api_key: str
    config_home: Path

    def env(self, target: str = "") -> dict[str, str]:
        return {
            **os.environ,
            "PARLEY_TARGET": target or self.edge,
            "PARLEY_API_KEY": self.api_key,
            "XDG_CONFIG_HOME": str(self.config_home),
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
        }


@pytest.fixture(scope="module")
async def partner(edge: str, local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Partner:
    made, _user_id = await new_partner(edge, local_stack, tmp_path_factory.mktemp("config"))
    return made


async def new_partner(
    edge: str, local_stack: LocalStack, config_home: Path, scopes: tuple[str, ...] = ("chat",)
) -> tuple[Partner, str]:
    """A new account with an API key of these scopes, and its user id."""
    email = f"chat-cli-{secrets.token_hex(5)}@parley.test"
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = session_stub(channel)
        registered = await register_verified(stub, local_stack.config.data_dir("mailbox"), email)
        created = await stub.CreateApiKey(
            session_pb2.CreateApiKeyRequest(
                parent="users/me",
                api_key=session_pb2.ApiKey(display_name="parley chat tests", scopes=list(scopes)),
                request_id=str(uuid.uuid4()),
            ),
            metadata=(("authorization", f"Bearer {registered.credentials.access_token}"),),
            timeout=10,
        )
    return Partner(edge, email, created.key, config_home), registered.user.name.removeprefix("users/")


async def start_chat(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_client",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_chat(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await start_chat(env, *args)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def read_words(process: asyncio.subprocess.Process, count: int) -> bytes:
    """Stdout until it holds count words of the answer (the stream is under way)."""
    assert process.stdout is not None
    seen = b""
    while len(seen.split()) < count:
        piece = await asyncio.wait_for(process.stdout.read(64), 60)
        assert piece, f"stdout ended after {seen!r}"
        seen += piece
    return seen


async def test_two_turns_of_one_conversation_stream_their_answers(partner: Partner) -> None:
    code, out, err = await run_chat(
        partner.env(),
        "--model",
        "parley-scripted",
        "-m",
        "hello [scripted ttft_ms=10]",
        "-m",
        "and again [scripted ttft_ms=10]",
    )
    assert code == 0, err
    # The model echoes the user turns it saw: the second turn saw the first.
    assert out == "you said: hello\nyou said: hello | and again\n"
    assert "parley-scripted | " in err
    assert "tokens in" in err


async def test_a_conversation_continues_in_a_later_run(partner: Partner) -> None:
    code, out, _ = await run_chat(
        partner.env(), "--model", "parley-scripted", "--json", "-m", "first [scripted ttft_ms=10]"
    )
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    turn = events[0]["started"]["turn"]
    conversation = turn.rpartition("/turns/")[0]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["completed"]["finishReason"] == "FINISH_REASON_STOP"

    code, out, err = await run_chat(
        partner.env(),
        "--model",
        "parley-scripted",
        "--conversation",
        conversation,
        "-m",
        "second [scripted ttft_ms=10]",
    )
    assert code == 0, err
    assert out == "you said: first | second\n"


async def test_a_password_sign_in_is_kept_for_the_next_run(partner: Partner, tmp_path: Path) -> None:
    env = {**partner.env(), "XDG_CONFIG_HOME": str(tmp_path)}
    del env["PARLEY_API_KEY"]
    turn = ("--model", "parley-scripted", "-m", "hi [scripted ttft_ms=10]")
    code, out, err = await run_chat({**env, "PARLEY_PASSWORD": PASSWORD}, "--email", partner.email, *turn)
    assert (code, out) == (0, "you said: hi\n"), err
    stored = tmp_path / "parley" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["sessions"][partner.edge]["email"] == partner.email

    # No password, no key: the stored session signs the next run in.
    code, out, err = await run_chat(env, *turn)
    assert (code, out) == (0, "you said: hi\n"), err

    code, _, err = await run_chat(env, "--sign-out")
    assert code == 0, err
    code, _, err = await run_chat(env, *turn)
    assert code == 1
    assert "not signed in" in err


async def test_ctrl_c_cancels_the_turn_and_keeps_what_was_said(partner: Partner) -> None:
    process = await start_chat(partner.env(), "--model", "parley-scripted", "-m", f"tell me a story {SLOW}")
    seen = await read_words(process, 4)
    process.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130, err.decode()
    assert "cancelled; the answer so far is kept" in err.decode()
    # It stopped well before the 200 words the turn would have had.
    assert 4 <= len((seen + rest).split()) < 100


class ReopeningProxy(TcpProxy):
    """A TcpProxy that can listen again on its port after a cut (the network comes back)."""

    async def reopen(self, port: int) -> None:
        self._cut = False
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)


async def test_a_dropped_connection_resumes_without_repeating_or_losing_a_word(partner: Partner) -> None:
    message = "count with me [scripted tokens_per_second=20 reply_tokens=60]"
    host, port = partner.edge.rsplit(":", 1)
    proxy = ReopeningProxy(host, int(port))
    proxy_port = await proxy.start()
    try:
        process = await start_chat(
            partner.env(f"127.0.0.1:{proxy_port}"), "--model", "parley-scripted", "-m", message
        )
        seen = await read_words(process, 8)
        await proxy.cut()
        await asyncio.sleep(0.5)  # at least one reconnect finds nobody listening
        await proxy.reopen(proxy_port)
        rest, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await proxy.cut()
    assert process.returncode == 0, err.decode()
    assert "connection lost" in err.decode()
    assert "resuming after event" in err.decode()

    # The same message in a new conversation, on a connection nobody cuts: the same reply.
    code, reference, _ = await run_chat(partner.env(), "--model", "parley-scripted", "-m", message)
    assert code == 0
    assert len(reference.split()) == 60
    assert (seen + rest).decode() == reference


async def test_a_turn_that_could_pass_a_budgets_soft_limit_warns_in_one_line(
    edge: str, local_stack: LocalStack, tmp_path: Path
) -> None:
    warned, user_id = await new_partner(edge, local_stack, tmp_path)
    host, port = local_stack.endpoint("redis", "redis")
    redis = Redis.from_url(f"redis://{host}:{port}/0")
    try:
        await BudgetState(redis).set_limits(BudgetScope.user(user_id), BudgetLimits(soft=1000))
    finally:
        await redis.aclose()

    code, out, err = await run_chat(
        warned.env(), "--model", "parley-scripted", "-m", "hi [scripted ttft_ms=10]"
    )

    assert code == 0, err
    assert out == "you said: hi\n"  # the answer alone; the warning is for the person
    # parley-scripted's turn may cost up to 3,072 micro-USD (docs/adr/0011: budgets).
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: users/{user_id}/budget could reach 0.003072 USD this month, "
        "past its soft limit of 0.001 USD"
    ]
