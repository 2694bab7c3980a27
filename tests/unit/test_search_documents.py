"""Search's pure parts: object ids, query words, snippets, hybrid fusion and page order."""

from __future__ import annotations

import uuid

from svc_history.search.documents import SNIPPET_CHARS, object_id, query_words, snippet
from svc_history.search.ranking import IndexHit, fuse, ordered, with_ties


def _hit(message_id: str, score: float) -> IndexHit:
    return IndexHit("c", message_id, f"text {message_id}", score)


def test_an_object_id_is_derived_from_the_message_s_name() -> None:
    user, conversation, message = "u1", str(uuid.uuid4()), str(uuid.uuid1())
    assert object_id(user, conversation, message) == object_id(user, conversation, message)
    assert object_id(user, conversation, message) != object_id("u2", conversation, message)
    assert object_id(user, conversation, message).version == 5


def test_query_words_are_case_folded_letters_and_digits() -> None:
    assert query_words("Car-repair, 2024's BEST!") == {"car", "repair", "2024", "s", "best"}
    assert query_words("  ... ") == set()
    assert query_words("Ärger über Öl") == {"ärger", "über", "öl"}


def test_a_short_text_is_its_own_snippet_with_each_query_word_marked() -> None:
    found = snippet("The car needs a car wash.", "CAR wash")
    assert found.text == "The car needs a car wash."
    assert [found.text[a:b] for a, b in found.matches] == ["car", "car", "wash"]


def test_a_word_inside_another_is_not_marked() -> None:
    found = snippet("Cartography and scars", "car")
    assert found.matches == ()


def test_a_long_text_s_snippet_starts_near_the_first_match_at_a_word() -> None:
    text = " ".join(f"word{n}" for n in range(100)) + " target " + " ".join(f"tail{n}" for n in range(100))
    found = snippet(text, "target")
    assert found.text.startswith("…")
    assert found.text.endswith("…")
    assert len(found.text) <= SNIPPET_CHARS + 2
    assert found.text[1:].split(" ")[0] in text.split(" "), "it starts at a whole word"
    [(a, b)] = found.matches
    assert found.text[a:b] == "target"
    assert 40 <= a <= 70


def test_a_snippet_without_a_match_is_the_start_of_the_text() -> None:
    text = "x" * 50 + " " + "y" * 300
    found = snippet(text, "automobile")
    assert found.text.startswith("x" * 50)
    assert found.text.endswith("…")
    assert found.matches == ()


def test_a_snippet_counts_code_points_not_bytes() -> None:
    found = snippet("😀 emoji then café", "café")
    assert [found.text[a:b] for a, b in found.matches] == ["café"]


def test_hybrid_fusion_keeps_a_weak_match_of_either_kind_above_zero() -> None:
    words = [_hit("both", 0.8), _hit("word", 0.2)]
    meaning = [_hit("both", 0.5), _hit("meaning", 0.45)]
    fused = ordered(fuse(words, meaning, 0.5))
    assert [h.message_id for h in fused] == ["both", "meaning", "word"]
    assert fused[0].score == 1.0
    assert fused[2].score == 0.5 * 0.2 / 0.8


def test_hybrid_alpha_weighs_meaning_against_words() -> None:
    words, meaning = [_hit("word", 1.0)], [_hit("meaning", 1.0)]
    assert [h.message_id for h in ordered(fuse(words, meaning, 0.9))] == ["meaning", "word"]
    assert [h.message_id for h in ordered(fuse(words, meaning, 0.1))] == ["word", "meaning"]


def test_equal_scores_are_ordered_by_message_id() -> None:
    hits = [_hit("b", 1.0), _hit("c", 2.0), _hit("a", 1.0)]
    assert [h.message_id for h in ordered(hits)] == ["c", "a", "b"]


async def test_a_window_ending_in_a_tie_is_fetched_until_the_tie_is_complete() -> None:
    ranked = [_hit("top", 3.0)] + [_hit(f"t{n}", 2.0) for n in range(9)] + [_hit("low", 1.0)]
    sizes: list[int] = []

    async def fetch(size: int) -> list[IndexHit]:
        sizes.append(size)
        return ranked[:size]

    found = await with_ties(fetch, 3)
    assert {h.message_id for h in found} >= {"top", *(f"t{n}" for n in range(9))}
    assert sizes == [4, 8, 16]


async def test_a_window_not_ending_in_a_tie_is_fetched_once() -> None:
    ranked = [_hit(str(n), 10.0 - n) for n in range(10)]
    sizes: list[int] = []

    async def fetch(size: int) -> list[IndexHit]:
        sizes.append(size)
        return ranked[:size]

    assert len(await with_ties(fetch, 3)) == 4
    assert sizes == [4]
