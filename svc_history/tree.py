"""A conversation's messages as a tree: paths, siblings and time order, from the skeleton.

Each message has one parent ("" for a first message); messages that share a parent are
branches (an edit, a regeneration). The skeleton (id, parent, bucket of every message) is
small, so the tree is rebuilt from it for each read instead of being kept anywhere: there
is no stored path that a concurrent writer could leave inconsistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from svc_history.model import order_key


@dataclass(frozen=True)
class Node:
    message_id: str
    parent_id: str
    bucket: int
    #: The message's order_key, when the reader already has it (saves parsing the id).
    key: tuple[int, bytes] | None = None


class Tree:
    def __init__(self, nodes: Iterable[Node]) -> None:
        self._nodes: dict[str, Node] = {node.message_id: node for node in nodes}
        self._keys = {
            node.message_id: node.key if node.key is not None else order_key(node.message_id)
            for node in self._nodes.values()
        }
        children: dict[str, list[str]] = {}
        for node in self._nodes.values():
            children.setdefault(node.parent_id, []).append(node.message_id)
        for ids in children.values():
            ids.sort(key=self._keys.__getitem__)
        self._children = children
        self._position = {
            message_id: index for ids in children.values() for index, message_id in enumerate(ids)
        }

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._nodes

    def key(self, message_id: str) -> tuple[int, bytes]:
        return self._keys[message_id]

    def node(self, message_id: str) -> Node:
        return self._nodes[message_id]

    def path_to(self, message_id: str) -> list[str]:
        """The ids from the first message down to message_id; [] when it is not here."""
        path: list[str] = []
        seen: set[str] = set()
        current = message_id
        while current and current in self._nodes and current not in seen:
            seen.add(current)
            path.append(current)
            current = self._nodes[current].parent_id
        path.reverse()
        return path

    def siblings(self, message_id: str) -> list[str]:
        """The messages with message_id's parent (message_id included), oldest first."""
        return list(self._children.get(self._nodes[message_id].parent_id, ()))

    def sibling_index(self, message_id: str) -> int:
        return self._position[message_id]

    def sibling_count(self, message_id: str) -> int:
        return len(self._children.get(self._nodes[message_id].parent_id, ()))

    def children(self, message_id: str) -> list[str]:
        return list(self._children.get(message_id, ()))

    def in_time_order(self) -> list[str]:
        """Every message, oldest first (the order of their time-ordered ids)."""
        return sorted(self._nodes, key=self._keys.__getitem__)
