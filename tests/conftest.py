"""Fixtures every test folder shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from parley_stack.testing import LocalStack, stack_config_for_tests


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The servers of the local stack; call `local_stack.ensure("redis", ...)` first."""
    handle = LocalStack(stack_config_for_tests(), reuse=os.environ.get("PARLEY_TEST_REUSE_STACK") == "1")
    try:
        yield handle
    finally:
        handle.close()
