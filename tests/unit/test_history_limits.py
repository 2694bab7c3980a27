"""The checks every history write passes first, against the configured limits."""

from __future__ import annotations

from parley_core.errors import FieldViolation
from svc_history import limits
from svc_history.settings import Limits

LIMITS = Limits(title_chars=10, tag_chars=5, tags_per_conversation=2, message_chars=20, folder_chars=30)


def _fields(found: list[FieldViolation]) -> list[str]:
    return [v.field for v in found]


def test_fitting_values_pass() -> None:
    assert limits.title("t", "0123456789", LIMITS) == []
    assert limits.tags("tags", ["a", "bcdef"], LIMITS) == []
    assert limits.folder("f", "work/clients", LIMITS) == []
    assert limits.folder("f", "", LIMITS) == []
    assert limits.message_text("m", "x" * 20, "user", LIMITS) == []
    assert limits.model("model", "llama-3.1:8b", LIMITS) == []


def test_each_limit_names_its_field() -> None:
    assert _fields(limits.title("conversation.title", "x" * 11, LIMITS)) == ["conversation.title"]
    assert _fields(limits.message_text("message.text", "x" * 21, "user", LIMITS)) == ["message.text"]
    assert _fields(limits.tags("tags", ["a", "b", "c"], LIMITS)) == ["tags"]
    assert _fields(limits.tags("tags", ["toolong", ""], LIMITS)) == ["tags[0]", "tags[1]"]
    assert _fields(limits.tags("tags", ["a", "a"], LIMITS)) == ["tags"]


def test_folders_are_clean_paths() -> None:
    for bad in ("/work", "work/", "work//clients", " work", "x" * 31):
        assert _fields(limits.folder("folder", bad, LIMITS)) == ["folder"], bad


def test_control_characters_are_refused_except_newlines_in_long_text() -> None:
    assert _fields(limits.title("title", "a\x07b", LIMITS)) == ["title"]
    assert limits.system_prompt("p", "line one\nline two\ttab", LIMITS) == []
    assert _fields(limits.message_text("m", "a\x00b", "user", LIMITS)) == ["m"]


def test_an_empty_message_is_an_assistant_s_only() -> None:
    assert _fields(limits.message_text("m", " ", "user", LIMITS)) == ["m"]
    assert limits.message_text("m", "", "assistant", LIMITS) == []


def test_a_title_is_made_from_the_opening_words() -> None:
    assert limits.title_from_text("  How do   I\nbake bread?  ") == "How do I bake bread?"
    long = "word " * 30
    made = limits.title_from_text(long)
    assert made.endswith("…")
    assert len(made) <= limits.AUTO_TITLE_CHARS + 1
    assert not made[:-1].endswith(" ")
