"""Persons: one id per human across devices and identifiers; the graph's protocol, no I/O.

A person is a connected component of identification values (a user id, an email, ...):
the values one anonymous id's identity holds are linked, so a user id on one device and an
email on another become one person the moment any device identifies with both. Each
value's state lives in the partition of the value (``Key``); the person's state (all its
values) lives with its *root*, the smallest key it holds (node order first: a person with
a user id is rooted at it), and its id is the root's (``person_id``): whatever order the
links arrive in, the same components have the same roots.

Two persons merge at the smaller root, the *winner*: the larger one, the *loser*, waits
(``Node.waiting``) with every message for it queued until the winner answers, and sends
the winner its values (``Join``). The winner refuses where the union would hold more
values of one node than ``PersonLimits`` allows (by default one user id and one email: a
person never gets a second user id). A loser waits only on a smaller key, and a winner
that waits itself queues the join, so every chain of waits descends and ends: no
deadlock, whatever the order.

    stitch   --Attach(anchor, values, anonymous id)-->   the anchor's root
    root R   --Find(value, origin R)-->                  the value's root Ri
    Ri > R:  Ri waits   --Join(Ri's values)-->           R decides
    Ri < R:             --Yield-->  R waits  --Join(R's values)-->  Ri decides
    winner   --Answer(accepted | refused)-->             the loser
             --Reparent(root)-->                         each of the loser's values
             --Resume(task)-->                           the anchor's root, next value

``step`` handles one message against a partition's ``Graph`` and says what to send and
what happened (``Linked``, ``Merged``, ``Refused``): the records the warehouses re-label
their rows by. A message handled twice (a batch processed again) changes nothing more:
an answer carries the loser's ``ticket`` and a stale one is ignored, a join whose loser
the winner holds is accepted again, and a refused join is remembered (``Node.refused``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_KIND",
    "Answer",
    "Attach",
    "Find",
    "Graph",
    "Join",
    "Key",
    "Linked",
    "Merged",
    "Message",
    "Node",
    "PersonLimits",
    "Refused",
    "Reparent",
    "Resume",
    "Step",
    "Task",
    "Yield",
    "identifier_id",
    "key_bytes",
    "person_id",
    "persons_topic",
    "step",
    "values_of",
]

#: an identification value: its node's index (the order of ``identification_nodes``) and
#: its value as text. Keys order persons: the smallest key of a person is its root.
Key = tuple[int, str]

#: refused joins a root remembers, so that a join handled again is refused again
REMEMBERED_REFUSALS = 64
#: the node index that stands for anonymous ids (never a node of the graph)
ANONYMOUS = -1
#: an anonymous id's kind in the persons table (a value's kind is its node's pointer)
ANONYMOUS_KIND = "anonymous_id"


def identifier_id(identifier: Key | str) -> str:
    """An identifier's id: its own person's, before it joins another (an anonymous id's is
    its key under ``ANONYMOUS``)."""
    return person_id((ANONYMOUS, identifier) if isinstance(identifier, str) else identifier)


def persons_topic(app_id: str) -> str:
    """The internal topic of the persons protocol, keyed by value (``key_bytes``)."""
    return f"{app_id}-persons"


def key_bytes(key: Key) -> bytes:
    """A value's key as its persons records' Kafka key: one value, one partition."""
    return f"{key[0]}:{key[1]}".encode()


@functools.lru_cache(maxsize=65_536)  # asked for every event's row: a stream has hot ids
def person_id(root: Key) -> str:
    """The id of the person rooted at ``root``: stable, and no value in clear."""
    node, value = root
    return hashlib.blake2b(f"{node}:{value}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class PersonLimits:
    """The most values of each identification node one person may hold (None: any)."""

    #: persons are resolved (the persons agent runs; the stitch flow attaches identities)
    enabled: bool = True
    per_node: tuple[int | None, ...] = (1, 1)
    #: the identification nodes' names, for the reasons of refusals
    names: tuple[str, ...] = ("/user/id", "/user/email")

    def limit(self, node: int) -> int | None:
        """The most values of ``node`` one person holds; a node beyond the list: one."""
        return self.per_node[node] if node < len(self.per_node) else 1

    def refusal(self, members: frozenset[Key]) -> str | None:
        """Why a person of ``members`` may not be, or None where it may."""
        counts: dict[int, int] = {}
        for node, _ in members:
            counts[node] = counts.get(node, 0) + 1
        for node, count in sorted(counts.items()):
            limit = self.limit(node)
            if limit is not None and count > limit:
                name = self.names[node] if node < len(self.names) else f"node {node}"
                return f"the person would hold {count} values of {name}; the limit is {limit}"
        return None


@dataclass(frozen=True, slots=True)
class Task:
    """An identification to bring into one person: the anonymous id joins the anchor's
    person, and each pending value is merged into it, in order."""

    anonymous_id: str  # "": none to link (a shared device's new identity under retain)
    anchor: Key  # the identity's first value (its stitched user id)
    pending: tuple[Key, ...]  # the first is the one being merged
    at: int = 0  # ms: the identifying event's time
    source: str = ""  # topic[partition]@offset of the identifying event
    event: str = ""  # the identifying event as it arrived: quarantined if refused

    def next(self) -> Task:
        return replace(self, pending=self.pending[1:])


@dataclass(frozen=True, slots=True)
class Attach:
    """From the stitch flow: an anonymous id's identity holds these values (the anchor
    first); addressed to the anchor."""

    to: Key
    anonymous_id: str  # "": link the values only
    values: tuple[Key, ...]
    at: int = 0
    source: str = ""
    event: str = ""


@dataclass(frozen=True, slots=True)
class Find:
    """Root ``origin`` asks the root of ``to`` to merge with it, for ``task``."""

    to: Key
    origin: Key
    task: Task


@dataclass(frozen=True, slots=True)
class Yield:
    """The root of the task's value is smaller: ``to`` must join ``winner``."""

    to: Key
    winner: Key
    task: Task


@dataclass(frozen=True, slots=True)
class Join:
    """A waiting root (``loser``) asks ``to`` (smaller) to take its values."""

    to: Key
    loser: Key
    members: frozenset[Key]
    ticket: int
    task: Task


@dataclass(frozen=True, slots=True)
class Answer:
    """A winner's answer to the loser's join ``ticket``."""

    to: Key
    winner: Key
    ticket: int
    accepted: bool


@dataclass(frozen=True, slots=True)
class Reparent:
    """A value of a person merged away: its root is now ``root``."""

    to: Key
    root: Key


@dataclass(frozen=True, slots=True)
class Resume:
    """Go on with ``task`` at the root of ``to`` (the anchor)."""

    to: Key
    task: Task


Message = Attach | Find | Yield | Join | Answer | Reparent | Resume


@dataclass(frozen=True, slots=True)
class Node:
    """What a partition keeps of one value; a root also keeps its person's values."""

    parent: Key | None = None  # None: a root
    members: frozenset[Key] = frozenset()  # a root's: every value of its person
    ticket: int = 0  # a root's joins asked so far
    waiting: bool = False  # a root that asked to join a smaller one, until it answers
    queue: tuple[Message, ...] = ()  # what came for a waiting root, in order
    refused: tuple[tuple[Key, int], ...] = ()  # (loser, ticket) of joins it refused


@dataclass(frozen=True, slots=True)
class Linked:
    """``identifier`` (a value's key, or an anonymous id) belongs to the person ``root``."""

    identifier: Key | str
    root: Key
    at: int = 0


@dataclass(frozen=True, slots=True)
class Merged:
    """The person ``loser`` is now the person ``winner``: re-label every row of it."""

    loser: Key
    winner: Key
    at: int = 0


@dataclass(frozen=True, slots=True)
class Refused:
    """``value`` may not join the task's person (``reason``): quarantine the event."""

    task: Task
    value: Key
    reason: str


class Graph(Protocol):
    """One partition's nodes (``streams.state`` keeps them)."""

    def node(self, key: Key) -> Node | None: ...

    def put(self, key: Key, node: Node) -> None: ...


@dataclass(slots=True)
class Step:
    """What handling one message asks for: messages to send, and what happened."""

    messages: list[Message] = field(default_factory=list)
    happened: list[Linked | Merged | Refused] = field(default_factory=list)


def step(message: Message, graph: Graph, limits: PersonLimits) -> Step:
    """Handle one message addressed to a value of this partition."""
    done = Step()
    if isinstance(message, Reparent):
        node = graph.node(message.to)
        if node is not None and node.parent is not None and node.parent != message.root:
            graph.put(message.to, replace(node, parent=message.root))
        return done
    if isinstance(message, Answer):
        _answered(message, graph, done)
        return done
    key = message.to
    node = graph.node(key)
    if node is None:  # a value seen for the first time: a person of its own
        node = Node(members=frozenset({key}))
        graph.put(key, node)
        done.happened.append(Linked(key, key, _at(message)))
    if node.parent is not None:
        if isinstance(message, Yield):  # its root moved on: try the value again from there
            done.messages.append(Resume(message.task.anchor, message.task))
        else:
            done.messages.append(replace(message, to=node.parent))
        return done
    if node.waiting:
        if message not in node.queue:  # a message handled again is queued once
            graph.put(key, replace(node, queue=(*node.queue, message)))
        return done
    _at_root(message, key, node, graph, limits, done)
    return done


def _at_root(
    message: Attach | Find | Yield | Join | Resume,
    root: Key,
    node: Node,
    graph: Graph,
    limits: PersonLimits,
    done: Step,
) -> None:
    if isinstance(message, Attach):
        task = Task(
            message.anonymous_id,
            root,
            message.values[1:],
            message.at,
            message.source,
            message.event,
        )
        _advance(task, root, node, done)
    elif isinstance(message, Resume):
        _advance(message.task, root, node, done)
    elif isinstance(message, Find):
        if root == message.origin:
            done.messages.append(Resume(message.task.anchor, message.task))
        elif root > message.origin:  # this root is the loser
            _wait(root, node, message.origin, message.task, graph, done)
        else:
            done.messages.append(Yield(message.origin, root, message.task))
    elif isinstance(message, Yield):
        _wait(root, node, message.winner, message.task, graph, done)
    else:
        _decide(message, root, node, graph, limits, done)


def _advance(task: Task, root: Key, node: Node, done: Step) -> None:
    """The task's next value not in the person yet: find its person; none: done."""
    while task.pending and task.pending[0] in node.members:
        task = task.next()
    if task.pending:
        done.messages.append(Find(task.pending[0], root, task))
    elif task.anonymous_id:
        done.happened.append(Linked(task.anonymous_id, root, task.at))


def _wait(root: Key, node: Node, winner: Key, task: Task, graph: Graph, done: Step) -> None:
    ticket = node.ticket + 1
    graph.put(root, replace(node, ticket=ticket, waiting=True))
    done.messages.append(Join(winner, root, node.members, ticket, task))


def _decide(
    join: Join, root: Key, node: Node, graph: Graph, limits: PersonLimits, done: Step
) -> None:
    """The winner's decision on a join: take the loser's values, or refuse them."""
    value = join.task.pending[0] if join.task.pending else join.loser
    if join.loser in node.members:  # handled before: the same answer
        done.messages.append(Answer(join.loser, root, join.ticket, True))
        return
    again = (join.loser, join.ticket) in node.refused
    reason = limits.refusal(node.members | join.members)
    if again and reason is None:  # its values fit now: what was refused stays refused
        reason = "refused when it was first asked: the person went over a limit"
    if reason is not None:
        if not again:
            refused = (*node.refused, (join.loser, join.ticket))[-REMEMBERED_REFUSALS:]
            graph.put(root, replace(node, refused=refused))
        done.messages.append(Answer(join.loser, root, join.ticket, False))
        done.happened.append(Refused(join.task, value, reason))
    else:
        graph.put(root, replace(node, members=node.members | join.members))
        done.messages.append(Answer(join.loser, root, join.ticket, True))
        done.messages += [Reparent(m, root) for m in sorted(join.members - {join.loser})]
        done.happened.append(Merged(join.loser, root, join.task.at))
    done.messages.append(Resume(join.task.anchor, join.task.next()))


def _answered(answer: Answer, graph: Graph, done: Step) -> None:
    """The loser hears back: merged away (its queue goes on to the winner), or not."""
    node = graph.node(answer.to)
    if node is None or not node.waiting or node.ticket != answer.ticket:
        return  # an answer handled before
    if answer.accepted:
        graph.put(answer.to, Node(parent=answer.winner, ticket=node.ticket))
    else:
        graph.put(answer.to, replace(node, waiting=False, queue=()))
    done.messages += node.queue


def _at(message: Message) -> int:
    if isinstance(message, Attach):
        return message.at
    task = getattr(message, "task", None)
    return task.at if isinstance(task, Task) else 0


def values_of(identity_values: Sequence[object]) -> tuple[Key, ...]:
    """An identity's values as keys, in node order (the first is the anchor)."""
    return tuple((i, str(v)) for i, v in enumerate(identity_values) if v is not None)
