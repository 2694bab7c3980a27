"""The model catalog (`model_repo/catalog.toml`): which models exist, who may use them, what serves them.

The router reads it for ListModels and routing, the ledger for prices; both load it with
`load_catalog`, which checks everything a reader would otherwise trip over later (unknown
backend kinds, fallbacks that lead nowhere or in circles, a default model some tier cannot
use, prices that are not whole micro-units) and names the model and field of each problem.
A `Catalog` is immutable; a new file means a new `Catalog`.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

__all__ = [
    "SCHEMA_VERSION",
    "Backend",
    "BytesTokenizer",
    "Capability",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "OpenAIBackend",
    "Price",
    "PriceChange",
    "TextTokenizer",
    "Tokenizer",
    "TritonBackend",
    "TritonTokenizer",
    "UnknownModelError",
    "load_catalog",
]

#: The format version this module reads (the file's `schema_version`). Version 2 gained the
#: optional `tokenizer` of a model without a version change: every version-2 file still reads.
SCHEMA_VERSION = 2

#: What a request may rely on a model for.
Capability = Literal["chat", "streaming", "cancel", "vision", "tools"]

# A model name is the id in `models/{model}` (AIP-122: lower case, digits, '-' and '.').
_ModelName = Annotated[StrictStr, Field(pattern=r"^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?$")]
# Tiers and endpoint names are identifiers the settings of the services use too.
_Identifier = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_-]*$")]
_Text = Annotated[StrictStr, Field(min_length=1)]
_Tokens = Annotated[StrictInt, Field(gt=0)]
_MicroUnits = Annotated[StrictInt, Field(ge=0)]
_PriceVersion = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


def _parameter_value(value: object) -> bool | int | float | str:
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"a parameter is a string, a number or a boolean, not {value!r}")
    return value


_ParameterValue = Annotated[bool | int | float | str, PlainValidator(_parameter_value)]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TritonBackend(_Entry):
    """A model of Triton's model repository, streamed over gRPC (decoupled)."""

    kind: Literal["triton"]
    #: The Triton model's name (its folder in model_repo/).
    model: _TritonModelName
    #: Request parameters sent with every request to this backend.
    parameters: Mapping[str, _ParameterValue] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """Names this backend in logs, metrics and circuit breakers."""
        return f"triton/{self.model}"


class OpenAIBackend(_Entry):
    """An OpenAI-compatible HTTP endpoint (vLLM, llama.cpp's server, a hosted provider)."""

    kind: Literal["openai"]
    #: The endpoint's name; the router's settings give its base URL and API key.
    endpoint: _Identifier
    #: The model name the endpoint serves (the request's `model`).
    model: _Text
    #: Extra fields of every request body sent to this backend.
    parameters: Mapping[str, _ParameterValue] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """Names this backend in logs, metrics and circuit breakers."""
        return f"openai/{self.endpoint}/{self.model}"


Backend = Annotated[TritonBackend | OpenAIBackend, Field(discriminator="kind")]


_TritonModelName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
_Overhead = Annotated[StrictInt, Field(ge=0)]


class TextTokenizer(_Entry):
    """A model whose tokens the router can count from the text itself.

    `words` are whitespace-separated words (`str.split`, parley-scripted's tokens);
    `words-and-punctuation` are words and single punctuation marks (parley-tiny's tokens).
    With `template = "chatml"` each message is counted as the ChatML turn it is sent as,
    `<|im_start|>{role}\n{content}<|im_end|>\n`, and the generation prompt
    `<|im_start|>assistant\n` once per conversation: exact for a model that reads ChatML and
    counts its prompt with the same tokenizer. With `template = "none"` only the content is
    counted.
    """

    kind: Literal["words", "words-and-punctuation"]
    template: Literal["chatml", "none"] = "chatml"
    #: Tokens added to every message's count (what a template adds that the router does not render).
    message_overhead: _Overhead = 0
    #: Tokens added once per conversation (a generation prompt, a default system message).
    prompt_overhead: _Overhead = 0


class BytesTokenizer(_Entry):
    """An upper bound for a model whose tokenizer the router does not have: UTF-8 bytes.

    Each message counts the bytes of its ChatML turn (as TextTokenizer renders it), the
    conversation the bytes of the generation prompt. A tokenizer whose every token covers at
    least one byte (byte-level BPE, SentencePiece with byte fallback) never needs more tokens
    than that, as long as its chat template adds no more bytes than ChatML does; the overheads
    cover a template that adds more. Safe, but it keeps about a quarter of what the window
    could hold. The default for a model that names no tokenizer.
    """

    kind: Literal["bytes"]
    message_overhead: _Overhead = 0
    prompt_overhead: _Overhead = 0


class TritonTokenizer(_Entry):
    """A Triton model that counts the model's own tokens (smollm2-tokens' interface).

    In: `messages`, BYTES [1], JSON `[{"role", "content"}]`. Out: `message_tokens`, INT32 [n],
    each message's own tokens wherever it stands in a conversation, and `overhead_tokens`,
    INT32 [1], what the chat template adds to the conversation as a whole, which may depend
    only on whether the first message is a system message. Their sum is the model's
    `prompt_tokens` for the same messages.
    """

    kind: Literal["triton"]
    #: The counting Triton model's name (its folder in model_repo/).
    model: _TritonModelName


Tokenizer = Annotated[TextTokenizer | BytesTokenizer | TritonTokenizer, Field(discriminator="kind")]


class Price(_Entry):
    """Prices per million tokens, in integer micro-units of `currency` (never a float).

    A model's first price (`[models.price]`) applies from the beginning; each later one
    (`[[models.price_changes]]`) from its `effective_time`. Every price has a `version`,
    which the ledger records on each line item it prices.
    """

    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")]
    input_per_million_tokens: _MicroUnits
    output_per_million_tokens: _MicroUnits
    version: _PriceVersion = "1"

    def cost_micros(self, input_tokens: int, output_tokens: int) -> int:
        """The cost of these tokens, rounded up once to a whole micro-unit (ADR 0013)."""
        exact = input_tokens * self.input_per_million_tokens + output_tokens * self.output_per_million_tokens
        return -(-exact // 1_000_000)


class PriceChange(Price):
    """A price that applies to usage at or after `effective_time` (a TOML datetime with an offset)."""

    effective_time: AwareDatetime


def _repeated(values: tuple[str, ...]) -> list[str]:
    """The values that occur more than once, each once, in order."""
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


class CatalogModel(_Entry):
    """One model as clients see it, and the backends that serve it, in fallback order."""

    name: _ModelName
    display_name: _Text
    #: The tiers that may use the model; empty for every tier.
    tiers: tuple[_Identifier, ...] = ()
    context_window: _Tokens
    max_output_tokens: _Tokens
    capabilities: tuple[Capability, ...] = ()
    #: Other models, tried in order once every backend of this one failed before its first token.
    fallbacks: tuple[_ModelName, ...] = ()
    backends: tuple[Backend, ...]
    #: The first price, from the beginning.
    price: Price
    #: Later prices, each from its effective_time, oldest first.
    price_changes: tuple[PriceChange, ...] = ()
    #: How the router counts a context in the model's tokens, to trim it to the window.
    tokenizer: Tokenizer = BytesTokenizer(kind="bytes")

    @model_validator(mode="after")
    def _consistent(self) -> CatalogModel:
        problems = [
            f"{field}: {value!r} is listed twice"
            for field, values in (
                ("tiers", self.tiers),
                ("capabilities", self.capabilities),
                ("fallbacks", self.fallbacks),
                ("backends", tuple(backend.key for backend in self.backends)),
            )
            for value in _repeated(values)
        ]
        if not self.backends:
            problems.append("backends: a model needs at least one")
        problems.extend(self._price_problems())
        if self.max_output_tokens > self.context_window:
            problems.append(
                f"max_output_tokens: {self.max_output_tokens} is more than the context_window "
                f"of {self.context_window}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _price_problems(self) -> list[str]:
        problems = [
            f"price_changes: version {version!r} is used twice"
            for version in _repeated((self.price.version, *(c.version for c in self.price_changes)))
        ]
        problems.extend(
            f"price_changes[{index}].currency: {change.currency!r} differs from price.currency "
            f"{self.price.currency!r}"
            for index, change in enumerate(self.price_changes)
            if change.currency != self.price.currency
        )
        for index, (before, after) in enumerate(itertools.pairwise(self.price_changes), start=1):
            if after.effective_time <= before.effective_time:
                problems.append(
                    f"price_changes[{index}].effective_time: {after.effective_time.isoformat()} is "
                    f"not after the change before it ({before.effective_time.isoformat()})"
                )
        return problems

    @property
    def prices(self) -> tuple[Price, ...]:
        """Every price of the model, oldest first."""
        return (self.price, *self.price_changes)

    def price_at(self, when: datetime) -> Price:
        """The price of usage at `when` (an aware datetime): the latest change in effect then."""
        current = self.price
        for change in self.price_changes:
            if change.effective_time > when:
                break
            current = change
        return current

    def highest_price_from(self, when: datetime) -> Price:
        """Per kind of token, the highest price in effect at `when` or at any later change:
        what a turn starting at `when` can cost at most per token, whenever it ends."""
        prices = [self.price_at(when), *(c for c in self.price_changes if c.effective_time > when)]
        return Price(
            currency=self.price.currency,
            input_per_million_tokens=max(p.input_per_million_tokens for p in prices),
            output_per_million_tokens=max(p.output_per_million_tokens for p in prices),
            version=prices[0].version,
        )

    def available_to(self, tier: str) -> bool:
        return not self.tiers or tier in self.tiers


class UnknownModelError(LookupError):
    """The catalog has no model of this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no model named {name!r} in the catalog")
        self.name = name


class Catalog(_Entry):
    """Every model, in the file's order. Build it with `load_catalog`."""

    schema_version: Literal[2]
    #: The model of a turn that names none; it exists and every tier may use it.
    default_model: _ModelName
    models: tuple[CatalogModel, ...]

    _by_name: dict[str, CatalogModel] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        problems: list[str] = [] if self.models else ["models: the catalog needs at least one"]
        for name in _repeated(tuple(model.name for model in self.models)):
            problems.append(f"model {name!r}: name: used by more than one model")
        self._by_name = {model.name: model for model in self.models}
        for model in self.models:
            problems.extend(self._fallback_problems(model))
        currencies = sorted({model.price.currency for model in self.models})
        if len(currencies) > 1:
            problems.append(f"price.currency: the catalog bills in one currency, but uses {currencies}")
        default = self._by_name.get(self.default_model)
        if default is None:
            problems.append(f"default_model: no model named {self.default_model!r}")
        elif default.tiers:
            problems.append(
                f"default_model: {default.name!r} must be open to every tier, "
                f"but its tiers are {list(default.tiers)}"
            )
        if problems:
            raise _CatalogProblemsError(problems)
        return self

    def _fallback_problems(self, model: CatalogModel) -> list[str]:
        problems: list[str] = []
        where = f"model {model.name!r}: fallbacks"
        for name in model.fallbacks:
            fallback = self._by_name.get(name)
            if fallback is None:
                problems.append(f"{where}: no model named {name!r}")
                continue
            if not fallback.tiers:
                continue
            if not model.tiers:
                problems.append(f"{where}: {name!r} is not open to every tier, as {model.name!r} is")
            for tier in model.tiers:
                if tier not in fallback.tiers:
                    problems.append(f"{where}: {name!r} is not open to tier {tier!r}, as {model.name!r} is")
        cycle = self._cycle_from(model.name, [model.name])
        if cycle:
            problems.append(f"{where}: lead back to {model.name!r} ({' -> '.join(cycle)})")
        return problems

    def _cycle_from(self, start: str, path: list[str]) -> list[str]:
        """The first fallback path from path[-1] that comes back to `start`; empty if none."""
        current = self._by_name.get(path[-1])
        for name in current.fallbacks if current else ():
            if name == start:
                return [*path, name]
            if name not in path:
                cycle = self._cycle_from(start, [*path, name])
                if cycle:
                    return cycle
        return []

    @property
    def currency(self) -> str:
        """The one currency every price is in."""
        return self.models[0].price.currency

    def model(self, name: str) -> CatalogModel:
        """The model called `name`; UnknownModelError if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownModelError(name) from None

    def available_to(self, tier: str) -> tuple[CatalogModel, ...]:
        """The models a user of `tier` may use, in catalog order."""
        return tuple(model for model in self.models if model.available_to(tier))


class CatalogError(ValueError):
    """The catalog file cannot be used; `problems` names the model and field of each."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path} is not a valid model catalog:\n" + "\n".join(f"  - {p}" for p in problems))
        self.path = path
        self.problems = problems


class _CatalogProblemsError(ValueError):
    """Problems across models, found after every model validated on its own."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_catalog(path: Path) -> Catalog:
    """Read and check the catalog at `path`; CatalogError lists every problem found."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(path, [f"not TOML: {error}"]) from None
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CatalogError(
            path, [f"schema_version: this reader knows {SCHEMA_VERSION}, the file says {version!r}"]
        )
    try:
        return Catalog.model_validate(raw)
    except ValidationError as error:
        raise CatalogError(path, _problems(error, raw)) from None


def _problems(error: ValidationError, raw: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for detail in error.errors():
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, _CatalogProblemsError):
            problems.extend(cause.problems)
            continue
        where = _where(detail["loc"], raw)
        message = str(cause) if detail["type"] == "value_error" else detail["msg"]
        if not isinstance(detail["input"], dict | list) and detail["type"] not in ("missing", "value_error"):
            message += f" (got {detail['input']!r})"
        problems.append(f"{where}: {message}" if where else message)
    return problems


# The discriminators' tags, which pydantic puts into an error's location.
_TAGS = frozenset({"triton", "openai", "words", "words-and-punctuation", "bytes"})


def _where(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """A pydantic location as the file's reader says it: "model 'x': price.currency"."""
    model = ""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "models" and isinstance(parts[1], int):
        index = parts[1]
        entries = raw.get("models")
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        model = f"model {name!r}" if isinstance(name, str) else f"models[{index}]"
        parts = parts[2:]
    field = ""
    previous: int | str | None = None
    for part in parts:
        if isinstance(part, int):
            field += f"[{part}]"
        elif part in _TAGS and (isinstance(previous, int) or previous == "tokenizer"):
            pass  # the discriminator's tag, which the file already says as `kind`
        else:
            field += f".{part}" if field else part
        previous = part
    return ": ".join(piece for piece in (model, field) if piece)
