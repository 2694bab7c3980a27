"""A conversation's tree: paths, siblings and time order, from the skeleton alone."""

from __future__ import annotations

import uuid

import pytest

from svc_history.model import order_key, time_ordered_id
from svc_history.tree import Node, Tree


def _ids(count: int) -> list[str]:
    """Time-ordered ids, oldest first (uuid1 is monotonic within a process)."""
    return [str(uuid.uuid1()) for _ in range(count)]


def _uuid7(millis: int, tail: int) -> str:
    value = (millis << 80) | (0x7 << 76) | (tail << 64 & ((1 << 76) - 1)) | (0b10 << 62) | 1
    return str(uuid.UUID(int=value))


@pytest.fixture
def branched() -> tuple[Tree, list[str]]:
    """u1 -> a1 -> u2 -> a2, with a regeneration a1' of a1 and an edit u2' of u2 below a1'."""
    u1, a1, u2, a2, a1b, u2b = _ids(6)
    nodes = [
        Node(u1, "", 0),
        Node(a1, u1, 0),
        Node(u2, a1, 0),
        Node(a2, u2, 1),
        Node(a1b, u1, 1),
        Node(u2b, a1b, 1),
    ]
    return Tree(reversed(nodes)), [u1, a1, u2, a2, a1b, u2b]


def test_the_path_runs_from_the_first_message_to_the_one_asked_for(branched: tuple[Tree, list[str]]) -> None:
    tree, (u1, a1, u2, a2, a1b, u2b) = branched

    assert tree.path_to(a2) == [u1, a1, u2, a2]
    assert tree.path_to(u2b) == [u1, a1b, u2b]
    assert tree.path_to(u1) == [u1]


def test_an_unknown_message_has_no_path(branched: tuple[Tree, list[str]]) -> None:
    tree, _ = branched

    assert tree.path_to(str(uuid.uuid1())) == []
    assert tree.path_to("") == []


def test_siblings_are_counted_and_ordered_oldest_first(branched: tuple[Tree, list[str]]) -> None:
    tree, (u1, a1, _, _, a1b, u2b) = branched

    assert tree.siblings(a1b) == [a1, a1b]
    assert (tree.sibling_index(a1), tree.sibling_count(a1)) == (0, 2)
    assert (tree.sibling_index(a1b), tree.sibling_count(a1b)) == (1, 2)
    assert (tree.sibling_index(u1), tree.sibling_count(u1)) == (0, 1)
    assert (tree.sibling_index(u2b), tree.sibling_count(u2b)) == (0, 1)


def test_several_first_messages_are_siblings_of_each_other() -> None:
    first, edited = _ids(2)
    tree = Tree([Node(edited, "", 0), Node(first, "", 0)])

    assert tree.siblings(first) == [first, edited]
    assert tree.sibling_index(edited) == 1


def test_time_order_follows_the_ids_not_the_tree(branched: tuple[Tree, list[str]]) -> None:
    tree, ids = branched

    assert tree.in_time_order() == ids
    assert tree.children(ids[0]) == [ids[1], ids[4]]


def test_a_parent_cycle_in_damaged_data_ends_the_path() -> None:
    a, b = _ids(2)
    tree = Tree([Node(a, b, 0), Node(b, a, 0)])

    assert tree.path_to(a) == [b, a]


def test_version_7_ids_order_by_their_millisecond_then_their_bits() -> None:
    early, same_ms_later, later = _uuid7(1_000, 1), _uuid7(1_000, 2), _uuid7(1_001, 0)

    assert time_ordered_id(early) is not None
    assert sorted([later, same_ms_later, early], key=order_key) == [early, same_ms_later, later]
    tree = Tree([Node(later, "", 0), Node(early, "", 0)])
    assert tree.siblings(later) == [early, later]


def test_only_version_1_and_7_ids_are_time_ordered() -> None:
    assert time_ordered_id(str(uuid.uuid1())) is not None
    assert time_ordered_id(str(uuid.uuid4())) is None
    assert time_ordered_id("not-a-uuid") is None
