"""The person graph of one partition of values, as one batch sees it.

``PersonGraph`` keeps each value's ``Node`` (``streams.core.persons``) under

    b"g" node(1 byte) L(V) V -> the node: a JSON object (parent, and a root's members,
                                ticket, waiting, queued messages and remembered refusals,
                                each refused loser as its person id, and the id of
                                the person a root took over from an erased one, and
                                its anonymous ids in the merge limit's window)

in table ``person-graph``, partitioned as the persons topic is (by value), through one
``Pending`` buffer over the partition's store. Handling one message changes at most one
node, and the protocol takes a message handled twice, at once or later, as once: so any
prefix of a batch's changes is safe, the batch then being processed again over it.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.core.errors import StateError
from streams.core.persons import Key, Node, person_id
from streams.core.persons_codec import as_object, from_object
from streams.state.keys import id_part
from streams.state.pending import Pending
from streams.state.store import Change, KeyValueStore

__all__ = ["GRAPH", "PersonGraph", "decode_node", "encode_node"]

GRAPH = b"g"


def _key(key: Key) -> bytes:
    node, value = key
    if not 0 <= node < 256:
        raise StateError(f"identification node index {node} is out of 0..255")
    return GRAPH + bytes((node,)) + id_part(value)


def encode_node(node: Node) -> bytes:
    document: dict[str, Any] = {"parent": None if node.parent is None else list(node.parent)}
    if node.parent is None:
        document |= {
            "members": [list(m) for m in sorted(node.members)],
            "ticket": node.ticket,
            "waiting": node.waiting,
            "queue": [as_object(message) for message in node.queue],
            "refused": [[loser, ticket] for loser, ticket in node.refused],
        }
        if node.name:
            document["name"] = node.name
        if node.devices:
            document["devices"] = [list(d) for d in node.devices]
    else:
        document["ticket"] = node.ticket
    return orjson.dumps(document)


def decode_node(value: bytes) -> Node:
    document = orjson.loads(value)
    parent = document["parent"]
    if parent is not None:
        return Node(parent=(parent[0], parent[1]), ticket=document["ticket"])
    return Node(
        members=frozenset((m[0], m[1]) for m in document["members"]),
        ticket=document["ticket"],
        waiting=document["waiting"],
        queue=tuple(from_object(message) for message in document["queue"]),
        refused=tuple((_hashed(loser), ticket) for loser, ticket in document["refused"]),
        name=document.get("name", ""),
        devices=tuple((d[0], d[1], d[2]) for d in document.get("devices", ())),
    )


def _hashed(loser: str | list[Any]) -> str:
    """A refused loser as its person id (a node written with the loser's key holds a list)."""
    return loser if isinstance(loser, str) else person_id((loser[0], loser[1]))


class PersonGraph:
    """One partition's values, as seen by one batch: store reads plus pending changes
    (``streams.core.persons.Graph``)."""

    def __init__(self, store: KeyValueStore) -> None:
        self._pending = Pending(store)

    def node(self, key: Key) -> Node | None:
        value = self._pending.get(_key(key))
        return None if value is None else decode_node(value)

    def put(self, key: Key, node: Node) -> None:
        self._pending.set(_key(key), encode_node(node))

    def remove(self, key: Key) -> None:
        self._pending.set(_key(key), None)

    def changes(self) -> list[Change]:
        """Every buffered change, each key once with its last value."""
        return self._pending.changes()
