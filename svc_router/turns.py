"""A chat turn as the router's domain sees it: names, events and what a turn ends with.

Plain Python: the servicer turns these into `parley.chat.v1` messages, the turn log into
JSON for Redis.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

#: How a turn ended, as the usage event spells it ("stop", "max_tokens", "cancelled", "error").
FinishReason = Literal["stop", "max_tokens", "cancelled", "error"]

#: The namespace of ids derived from what they name, so that a retry derives the same id.
_IDS = uuid.UUID("5b0c7d0e-2f4a-4f4e-9a57-3c1d2a7b9e10")


def derived_id(*parts: str) -> str:
    """A UUID (version 5) that the same parts always give."""
    return str(uuid.uuid5(_IDS, "\x1f".join(parts)))


_last_v7 = 0


def time_ordered_id() -> str:
    """A time-ordered UUID (version 7): the message ids history expects from writers.

    Increasing within this process even inside one millisecond (the random bits count
    up), so an answer's id always sorts after its question's.
    """
    global _last_v7
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(uuid.uuid4().bytes[6:], "big") & ((1 << 74) - 1)
    bits = (ms << 74) | rand
    if bits <= _last_v7:
        bits = _last_v7 + 1
    _last_v7 = bits
    ms, rand = bits >> 74, bits & ((1 << 74) - 1)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class TurnName:
    """`users/{user}/conversations/{conversation}/turns/{turn}`."""

    user_id: str
    conversation_id: str
    turn_id: str

    @property
    def conversation(self) -> str:
        return f"users/{self.user_id}/conversations/{self.conversation_id}"

    def message(self, message_id: str) -> str:
        return f"{self.conversation}/messages/{message_id}"

    def __str__(self) -> str:
        return f"{self.conversation}/turns/{self.turn_id}"


@dataclass(frozen=True)
class BudgetWarning:
    """A monthly budget whose soft limit the turn could pass (it goes ahead all the same)."""

    #: The budget's resource name (`users/{user}/budget`, ...).
    budget: str
    soft_limit_micros: int
    #: Spent and reserved this month, this turn's largest cost included.
    committed_micros: int
    currency: str


@dataclass(frozen=True)
class Started:
    """The turn was admitted, its user message stored and a backend answers."""

    user_message: str
    assistant_message: str
    #: `models/{model}`: the model that answers, after any failover.
    model: str
    #: The soft limits the turn could pass, from its reservation at admission.
    budget_warnings: tuple[BudgetWarning, ...] = ()


@dataclass(frozen=True)
class Delta:
    """Text added to the answer, and how many of the model's tokens it is."""

    text: str
    tokens: int


@dataclass(frozen=True)
class Completed:
    """The turn ended; the answer is stored and the usage event written to the outbox."""

    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    #: The estimated cost in micro-units of currency.
    cost_micros: int
    currency: str
    error_message: str = ""
    error_reason: str = ""


@dataclass(frozen=True)
class TurnEvent:
    """One event of a turn; sequences count from 1 without gaps."""

    sequence: int
    #: When the router emitted it, in milliseconds since the epoch.
    time_ms: int
    kind: Started | Delta | Completed

    @property
    def final(self) -> bool:
        return isinstance(self.kind, Completed)


@dataclass(frozen=True)
class TurnRecord:
    """What any router needs to follow, cancel or close a turn it did not start."""

    name: TurnName
    user_message_id: str
    assistant_message_id: str
    #: The model asked for (`models/{model}`); the one that answered is in Started.
    model: str
    tier: str
    api_key_id: str
    #: The prompt's tokens as the router counted them (0 until the context is assembled),
    #: what a turn whose router died is billed for reading.
    prompt_tokens: int = 0
    #: What the turn's TurnStarted warns of, whichever router sends it.
    budget_warnings: tuple[BudgetWarning, ...] = ()
