"""The records a request-id claim holds, as bytes (JSON), so a retry can finish the first
request's writes exactly."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from svc_history.model import Conversation, Message, ShareLink, Usage


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _dump(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()


def conversation_payload(c: Conversation) -> bytes:
    return _dump(
        {
            "user_id": c.user_id, "conversation_id": c.conversation_id, "title": c.title, "model": c.model,
            "system_prompt": c.system_prompt, "folder": c.folder, "tags": list(c.tags), "pinned": c.pinned,
            "archived": c.archived, "active_message": c.active_message, "create_time": _time(c.create_time),
            "update_time": _time(c.update_time), "version": c.version, "request_id": c.request_id,
        }
    )  # fmt: skip


def conversation_from(payload: bytes) -> Conversation:
    f = json.loads(payload)
    return Conversation(
        user_id=f["user_id"],
        conversation_id=f["conversation_id"],
        title=f["title"],
        model=f["model"],
        system_prompt=f["system_prompt"],
        folder=f["folder"],
        tags=tuple(f["tags"]),
        pinned=f["pinned"],
        archived=f["archived"],
        active_message=f["active_message"],
        create_time=_parse(f["create_time"]),  # type: ignore[arg-type]
        update_time=_parse(f["update_time"]),  # type: ignore[arg-type]
        version=f["version"],
        request_id=f["request_id"],
    )


def message_payload(m: Message) -> bytes:
    return _dump(
        {
            "user_id": m.user_id, "conversation_id": m.conversation_id, "message_id": m.message_id,
            "parent_id": m.parent_id, "author": m.author, "text": m.text, "model": m.model, "state": m.state,
            "usage": [m.usage.input_tokens, m.usage.output_tokens] if m.usage else None, "turn": m.turn,
            "create_time": _time(m.create_time), "bucket": m.bucket,
        }
    )  # fmt: skip


def message_from(payload: bytes) -> Message:
    f = json.loads(payload)
    usage = f["usage"]
    return Message(
        user_id=f["user_id"],
        conversation_id=f["conversation_id"],
        message_id=f["message_id"],
        parent_id=f["parent_id"],
        author=f["author"],
        text=f["text"],
        model=f["model"],
        state=f["state"],
        usage=Usage(int(usage[0]), int(usage[1])) if usage else None,
        turn=f["turn"],
        create_time=_parse(f["create_time"]),  # type: ignore[arg-type]
        bucket=int(f["bucket"]),
    )


def share_payload(link: ShareLink, token_hash: str, sealed_token: bytes) -> bytes:
    return _dump(
        {
            "user_id": link.user_id, "conversation_id": link.conversation_id,
            "share_link_id": link.share_link_id, "last_message": link.last_message,
            "expire_time": _time(link.expire_time), "password_hash": link.password_hash,
            "create_time": _time(link.create_time), "title": link.title, "request_id": link.request_id,
            "token_hash": token_hash, "sealed_token": sealed_token.hex(),
        }
    )  # fmt: skip


def share_from(payload: bytes) -> tuple[ShareLink, str, bytes]:
    """The link, its token's digest and the sealed token."""
    f = json.loads(payload)
    link = ShareLink(
        user_id=f["user_id"],
        conversation_id=f["conversation_id"],
        share_link_id=f["share_link_id"],
        last_message=f["last_message"],
        expire_time=_parse(f["expire_time"]),
        password_hash=f["password_hash"],
        create_time=_parse(f["create_time"]),  # type: ignore[arg-type]
        title=f["title"],
        request_id=f["request_id"],
    )
    return link, f["token_hash"], bytes.fromhex(f["sealed_token"])
