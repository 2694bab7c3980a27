"""The context a turn sends: counted in the model's own tokens and fitted to its window.

Glue between the engine and `svc_router.tokens` (counting) and `svc_router.context`
(choosing what fits); turns their failures into statuses.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from parley_core.catalog import CatalogModel
from parley_core.errors import FieldViolation, invalid_argument
from svc_router.backends import ChatMessage
from svc_router.context import ContextTooLongError, assemble
from svc_router.engine import Prompt
from svc_router.tokens import TokenCounter, TokenCountError, upper_bound

_log = structlog.get_logger("svc_router.prompts")


class Prompts:
    def __init__(self, counter: TokenCounter, *, timeout_s: float) -> None:
        self._counter = counter
        self._timeout_s = timeout_s

    async def build(self, model: CatalogModel, system_prompt: str, path: Sequence[ChatMessage]) -> Prompt:
        system = ChatMessage("system", system_prompt) if system_prompt else None
        counted = [system, *path] if system else list(path)
        try:
            counts = await self._counter.count(model, counted, timeout_s=self._timeout_s)
        except TokenCountError as error:
            # The model's counter (a Triton model) is down; another backend may still answer.
            _log.warning("counting with an upper bound", model=model.name, detail=error.detail)
            counts = upper_bound(counted)
        try:
            context = assemble(system, path, counts, model.context_window, model.max_output_tokens)
        except ContextTooLongError as error:
            raise invalid_argument([FieldViolation("input.text", str(error))]) from None
        return Prompt(context.messages, context.prompt_tokens, context.max_tokens, context.dropped)

    async def check(self, model: CatalogModel, system_prompt: str, text: str) -> None:
        """INVALID_ARGUMENT when the message alone (with the system prompt) cannot fit."""
        await self.build(model, system_prompt, [ChatMessage("user", text)])
