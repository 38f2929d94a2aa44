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

An erased value leaves the graph (``Erase``): a member is dropped from its root's
values (``Drop``); an erased root hands its person to its smallest other value
(``Adopt``, ``Reparent``) under a new id (for the warehouses a merge). Nothing of the value
stays in state: a message still on its way to it (it was a root, or a member's parent)
finds no node and is retried from its task's anchor, never re-creating it; a root that
still lists it learns so when its ``Reparent`` finds no node. Only an identification
that holds the value (an ``Attach`` or a ``Find`` for it) brings it back.

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

from streams.core.clock import DAY_MS
from streams.core.merges import MergeLimit

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_KIND",
    "Adopt",
    "Answer",
    "Attach",
    "Devices",
    "Drop",
    "Erase",
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
    "anchor_of",
    "identifier_id",
    "key_bytes",
    "person_id",
    "persons_topic",
    "step",
    "successor_id",
    "values_of",
]

#: an identification value: its node's index (the order of ``identification_nodes``) and
#: its value as text. Keys order persons: the smallest key of a person is its root.
Key = tuple[int, str]
#: a person's anonymous ids within the merge limit's window: (anonymous id, last linked ms,
#: the id of the identity's first value it came by: hashed, no value in state)
Devices = tuple[tuple[str, int, str], ...]

#: refused joins a root remembers, so that a join handled again is refused again
REMEMBERED_REFUSALS = 64
#: the node index that stands for anonymous ids (never a node of the graph)
ANONYMOUS = -1
#: an anonymous id's kind in the persons table (a value's kind is its node's pointer)
ANONYMOUS_KIND = "anonymous_id"


@functools.lru_cache(maxsize=65_536)  # asked for every event's row, as person_id is
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


def successor_id(person: str, heir: Key) -> str:
    """The new id of the person ``person`` once its root was erased and ``heir`` roots it:
    derived from ids, not from the erased value, and unlike any id before it."""
    node, value = heir
    return hashlib.blake2b(f"{person}>{node}:{value}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class PersonLimits:
    """The most values of each identification node one person may hold (None: any)."""

    #: persons are resolved (the persons agent runs; the stitch flow attaches identities)
    enabled: bool = True
    per_node: tuple[int | None, ...] = (1, 1)
    #: the identification nodes' names, for the reasons of refusals
    names: tuple[str, ...] = ("/user/id", "/user/email")
    #: the most messages a waiting root keeps (in its one state value) until its answer
    #: comes; beyond, a message goes back to the end of the persons topic, to come again
    max_queued: int = 256
    #: the merge limit, counted per person: the most anonymous ids one person takes within
    #: ``window_ms`` (None: any; the settings take both from ``MergeLimit``)
    max_anonymous_ids: int | None = MergeLimit().max_anonymous_ids
    window_ms: int = MergeLimit().window_ms

    def devices(self, devices: Devices) -> Devices:
        """``devices`` in the window of the newest, each anonymous id once, as last linked
        (none where the limit is off: nothing to count)."""
        if self.max_anonymous_ids is None:
            return ()
        newest: dict[str, tuple[int, str]] = {}
        for anonymous_id, at, identity in devices:
            if at >= newest.get(anonymous_id, (at, ""))[0]:
                newest[anonymous_id] = (at, identity)
        if not newest:
            return ()
        since = max(at for at, _ in newest.values()) - self.window_ms
        return tuple(sorted((a, at, i) for a, (at, i) in newest.items() if at > since))

    def too_many(self, devices: Devices) -> str | None:
        """Why a person of ``devices`` (in the window) may not be, or None where it may."""
        limit = self.max_anonymous_ids
        if limit is None or len(devices) <= limit:
            return None
        days = self.window_ms / DAY_MS
        return (
            f"the person would hold {len(devices)} anonymous ids within {days:g} days"
            f" (users_recognition.max_anonymous_ids_per_identity, counted per person: {limit})"
        )

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
    partition: int = -1  # the anonymous id's stitch partition (its merge-limit answers')

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
    partition: int = -1  # the anonymous id's stitch partition

    def task(self, anchor: Key) -> Task:
        """The identification as a task at ``anchor``: the values after the first to merge."""
        return Task(
            self.anonymous_id,
            anchor,
            self.values[1:],
            self.at,
            self.source,
            self.event,
            self.partition,
        )


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
    name: str = ""  # the loser's person id, where it is not person_id(loser)
    devices: Devices = ()  # the loser's anonymous ids in the window


@dataclass(frozen=True, slots=True)
class Answer:
    """A winner's answer to the loser's join ``ticket``."""

    to: Key
    winner: Key
    ticket: int
    accepted: bool


@dataclass(frozen=True, slots=True)
class Reparent:
    """A value of a person merged away (or whose root was erased): its root is now
    ``root``, where it still is ``former``'s (a copy sent twice never takes it back)."""

    to: Key
    root: Key
    former: Key | None = None  # None: whatever its root was


@dataclass(frozen=True, slots=True)
class Resume:
    """Go on with ``task`` at the root of ``to`` (the anchor)."""

    to: Key
    task: Task


@dataclass(frozen=True, slots=True)
class Erase:
    """The value ``to`` is erased: it leaves the graph and its person (``at``: ms)."""

    to: Key
    at: int = 0


@dataclass(frozen=True, slots=True)
class Drop:
    """The value ``value`` left the graph: the root ``to`` no longer holds it."""

    to: Key
    value: Key


@dataclass(frozen=True, slots=True)
class Adopt:
    """The root ``former`` of ``members`` was erased: ``to``, the smallest of them, is
    their root, and their person's id is now ``name``."""

    to: Key
    former: Key
    members: frozenset[Key]
    name: str
    at: int = 0
    devices: Devices = ()


Message = Attach | Find | Yield | Join | Answer | Reparent | Resume | Erase | Drop | Adopt


@dataclass(frozen=True, slots=True)
class Node:
    """What a partition keeps of one value; a root also keeps its person's values."""

    parent: Key | None = None  # None: a root
    members: frozenset[Key] = frozenset()  # a root's: every value of its person
    ticket: int = 0  # a root's joins asked so far
    waiting: bool = False  # a root that asked to join a smaller one, until it answers
    queue: tuple[Message, ...] = ()  # what came for a waiting root, in order
    #: (the loser's ``person_id``, ticket) of joins it refused: hashed, so that no value
    #: outlives its erasure in another person's node
    refused: tuple[tuple[str, int], ...] = ()
    #: a root's person id where it is not person_id(root): that of a root that took over
    #: the person of an erased one (``successor_id``)
    name: str = ""
    #: a root's anonymous ids within the merge limit's window (with the limit on)
    devices: Devices = ()

    def person(self, key: Key) -> str:
        """The id of the person this node (a root, at ``key``) roots."""
        return self.name or person_id(key)


@dataclass(frozen=True, slots=True)
class Linked:
    """``identifier`` (a value's key, or an anonymous id) belongs to the person rooted at
    ``root``, whose id is ``person``."""

    identifier: Key | str
    root: Key
    at: int = 0
    person: str = ""

    def __post_init__(self) -> None:
        if not self.person:
            object.__setattr__(self, "person", person_id(self.root))


@dataclass(frozen=True, slots=True)
class Merged:
    """The person ``loser`` is now the person ``winner``: re-label every row of it
    (``loser_person``, ``winner_person``: their ids)."""

    loser: Key
    winner: Key
    at: int = 0
    loser_person: str = ""
    winner_person: str = ""

    def __post_init__(self) -> None:
        if not self.loser_person:
            object.__setattr__(self, "loser_person", person_id(self.loser))
        if not self.winner_person:
            object.__setattr__(self, "winner_person", person_id(self.winner))


@dataclass(frozen=True, slots=True)
class Refused:
    """``value`` may not join the task's person (``reason``): quarantine the event."""

    task: Task
    value: Key
    reason: str
    #: the task's anonymous id may not join the person (the merge limit): the stitch flow
    #: un-merges it, as the merge limit's own refusal does
    device: bool = False


class Graph(Protocol):
    """One partition's nodes (``streams.state`` keeps them)."""

    def node(self, key: Key) -> Node | None: ...

    def put(self, key: Key, node: Node) -> None: ...

    def remove(self, key: Key) -> None: ...


@dataclass(slots=True)
class Step:
    """What handling one message asks for: messages to send, and what happened."""

    messages: list[Message] = field(default_factory=list)
    happened: list[Linked | Merged | Refused] = field(default_factory=list)


def step(message: Message, graph: Graph, limits: PersonLimits) -> Step:
    """Handle one message addressed to a value of this partition."""
    done = Step()
    if isinstance(message, Reparent):
        _reparented(message, graph, done)
        return done
    if isinstance(message, Answer):
        _answered(message, graph, done)
        return done
    key = message.to
    node = graph.node(key)
    if node is None:
        if not _brings(message):  # for a value that left the graph
            _gone(message, done)
            return done
        node = Node(members=frozenset({key}))  # a value seen for the first time
        graph.put(key, node)
        done.happened.append(Linked(key, key, _at(message)))
    if node.parent is not None:
        _at_child(message, key, node, graph, done)
        return done
    if node.waiting:
        if message in node.queue:  # a message handled again is queued once
            return done
        if len(node.queue) >= limits.max_queued:
            done.messages.append(message)  # to come again once the root answered
        else:
            graph.put(key, replace(node, queue=(*node.queue, message)))
        return done
    _at_root(message, key, node, graph, limits, done)
    return done


def _brings(message: Message) -> bool:
    """Whether ``message`` brings its value into the graph: an identification that holds
    it. Every other message is for a value the graph holds (a root, a member); for one
    it no longer holds, erased meanwhile, it is retried (``_gone``), never re-creating it."""
    if isinstance(message, Attach):
        return message.to == message.values[0]
    if isinstance(message, Find):
        return bool(message.task.pending) and message.to == message.task.pending[0]
    return False


def _gone(message: Message, done: Step) -> None:
    """A message for an erased value: the task goes on from its anchor, a join is answered
    (so that the loser stops waiting) and retried, an adoption passes to the next member."""
    if isinstance(message, Attach):
        anchor = message.values[0]
        done.messages.append(Resume(anchor, message.task(anchor)))
    elif isinstance(message, Join):
        done.messages.append(Answer(message.loser, message.to, message.ticket, False))
        done.messages.append(Resume(message.task.anchor, message.task))
    elif isinstance(message, Find | Yield) or (
        isinstance(message, Resume) and message.to != message.task.anchor
    ):
        done.messages.append(Resume(message.task.anchor, message.task))
    elif isinstance(message, Adopt) and (rest := message.members - {message.to}):
        _hand_over(message.to, rest, message.name, message.at, message.devices, done)
    # a Resume for an erased anchor ends its task; an Erase or Drop has nothing to do


def _at_child(message: Message, key: Key, node: Node, graph: Graph, done: Step) -> None:
    assert node.parent is not None
    if isinstance(message, Erase):
        graph.remove(key)
        done.messages.append(Drop(node.parent, key))
    elif isinstance(message, Adopt):  # a duplicate finds the heir under another root
        if node.parent == message.former:
            adopted = Node(
                members=message.members,
                ticket=node.ticket,
                name=message.name,
                devices=message.devices,
            )
            graph.put(key, adopted)
    elif isinstance(message, Yield):  # its root moved on: try the value again from there
        done.messages.append(Resume(message.task.anchor, message.task))
    else:
        done.messages.append(replace(message, to=node.parent))


def _hand_over(
    key: Key, rest: frozenset[Key], name: str, at: int, devices: Devices, done: Step
) -> None:
    """The person ``name`` of ``key``, without it, is rooted at its smallest other value,
    under a new id that names no value (``successor_id``): its rows are merged into it, so
    that none shows an id derived from the erased value, and the merge goes to an id never
    seen before (the warehouses' merges never turn back)."""
    heir = min(rest)
    successor = successor_id(name, heir)
    done.messages.append(Adopt(heir, key, rest, successor, at, devices))
    done.messages += [Reparent(m, heir, key) for m in sorted(rest - {heir})]
    done.happened.append(Merged(key, heir, at, name, successor))


def _at_root(
    message: Message,
    root: Key,
    node: Node,
    graph: Graph,
    limits: PersonLimits,
    done: Step,
) -> None:
    if isinstance(message, Attach):
        _advance(message.task(message.values[0]), root, node, graph, limits, done)
    elif isinstance(message, Resume):
        _advance(message.task, root, node, graph, limits, done)
    elif isinstance(message, Find):
        if root == message.origin:
            done.messages.append(Resume(message.task.anchor, message.task))
        elif root > message.origin:  # this root is the loser
            _wait(root, node, message.origin, message.task, graph, done)
        else:
            done.messages.append(Yield(message.origin, root, message.task))
    elif isinstance(message, Yield):
        _wait(root, node, message.winner, message.task, graph, done)
    elif isinstance(message, Join):
        _decide(message, root, node, graph, limits, done)
    elif isinstance(message, Erase):
        graph.remove(root)
        if rest := node.members - {root}:
            _hand_over(root, rest, node.person(root), message.at, node.devices, done)
    elif isinstance(message, Drop):
        _dropped(message.value, root, node, graph)


def _dropped(value: Key, root: Key, node: Node, graph: Graph) -> None:
    """The root forgets an erased value."""
    if value != root and value in node.members:
        graph.put(root, replace(node, members=node.members - {value}))


def _reparented(message: Reparent, graph: Graph, done: Step) -> None:
    """A member learns its new root; one that left the graph tells the root to drop it."""
    node = graph.node(message.to)
    if node is None:
        done.messages.append(Drop(message.root, message.to))
    elif node.parent is not None and message.former in (None, node.parent):
        graph.put(message.to, replace(node, parent=message.root))


def _advance(
    task: Task, root: Key, node: Node, graph: Graph, limits: PersonLimits, done: Step
) -> None:
    """The task's next value not in the person yet: find its person; none: the anonymous
    id joins the person, where the merge limit lets it."""
    while task.pending and task.pending[0] in node.members:
        task = task.next()
    if task.pending:
        done.messages.append(Find(task.pending[0], root, task))
    elif task.anonymous_id:
        if limits.max_anonymous_ids is not None:  # the merge limit counts per person
            device = (task.anonymous_id, task.at, identifier_id(task.anchor))
            devices = limits.devices((*node.devices, device))
            if limits.too_many(tuple(d for d in devices if d[2] == device[2])) is None:
                reason = limits.too_many(devices)
                if reason is not None:
                    done.happened.append(Refused(task, task.anchor, reason, device=True))
                    return
                if devices != node.devices:
                    graph.put(root, replace(node, devices=devices))
            # else its identity alone is over the limit: that count's refusal un-merges it
        done.happened.append(Linked(task.anonymous_id, root, task.at, node.person(root)))


def _wait(root: Key, node: Node, winner: Key, task: Task, graph: Graph, done: Step) -> None:
    ticket = node.ticket + 1
    graph.put(root, replace(node, ticket=ticket, waiting=True))
    done.messages.append(Join(winner, root, node.members, ticket, task, node.name, node.devices))


def _decide(
    join: Join, root: Key, node: Node, graph: Graph, limits: PersonLimits, done: Step
) -> None:
    """The winner's decision on a join: take the loser's values, or refuse them."""
    value = join.task.pending[0] if join.task.pending else join.loser
    if join.loser in node.members:  # handled before: the same answer
        done.messages.append(Answer(join.loser, root, join.ticket, True))
        return
    asked = (person_id(join.loser), join.ticket)
    again = asked in node.refused
    devices = limits.devices((*node.devices, *join.devices))
    reason = limits.refusal(node.members | join.members) or limits.too_many(devices)
    if again and reason is None:  # its values fit now: what was refused stays refused
        reason = "refused when it was first asked: the person went over a limit"
    if reason is not None:
        if not again:
            refused = (*node.refused, asked)[-REMEMBERED_REFUSALS:]
            graph.put(root, replace(node, refused=refused))
        done.messages.append(Answer(join.loser, root, join.ticket, False))
        done.happened.append(Refused(join.task, value, reason))
    else:
        graph.put(root, replace(node, members=node.members | join.members, devices=devices))
        done.messages.append(Answer(join.loser, root, join.ticket, True))
        moved = sorted(join.members - {join.loser})
        done.messages += [Reparent(m, root, join.loser) for m in moved]
        loser = join.name or person_id(join.loser)
        done.happened.append(Merged(join.loser, root, join.task.at, loser, node.person(root)))
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
    if isinstance(message, Attach | Erase | Adopt):
        return message.at
    task = getattr(message, "task", None)
    return task.at if isinstance(task, Task) else 0


def anchor_of(identity_values: Sequence[object]) -> Key:
    """An identity's first value as a key (``values_of(...)[0]``, without the others)."""
    return next((i, str(v)) for i, v in enumerate(identity_values) if v is not None)


def values_of(identity_values: Sequence[object]) -> tuple[Key, ...]:
    """An identity's values as keys, in node order (the first is the anchor)."""
    return tuple((i, str(v)) for i, v in enumerate(identity_values) if v is not None)
