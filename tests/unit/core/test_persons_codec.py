"""The persons topic's records: every message reads back as written; a bad one says why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.errors import BadRecord
from streams.core.persons import (
    Adopt,
    Answer,
    Attach,
    Drop,
    Erase,
    Find,
    Join,
    Message,
    Reparent,
    Resume,
    Task,
    Yield,
)
from streams.core.persons_codec import encode, parse_message

KEYS = st.tuples(st.integers(0, 3), st.text(max_size=20))
PARTITIONS = st.sampled_from([-1, 0, 7])
DEVICES = st.lists(
    st.tuples(st.text(max_size=8), st.integers(0, 2**53), st.sampled_from(["0f" * 16])),
    max_size=3,
).map(tuple)
TASKS = st.builds(
    Task,
    st.text(max_size=20),
    KEYS,
    st.lists(KEYS, max_size=3).map(tuple),
    st.integers(0, 2**53),
    st.text(max_size=30),
    st.text(max_size=30),
    PARTITIONS,
)
MESSAGES: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Attach,
        KEYS,
        st.text(max_size=20),
        st.lists(KEYS, min_size=1, max_size=3).map(tuple),
        st.integers(0, 2**53),
        st.text(max_size=30),
        st.text(max_size=30),
        PARTITIONS,
    ),
    st.builds(Find, KEYS, KEYS, TASKS),
    st.builds(Yield, KEYS, KEYS, TASKS),
    st.builds(
        Join,
        KEYS,
        KEYS,
        st.frozensets(KEYS, max_size=4),
        st.integers(0, 99),
        TASKS,
        st.sampled_from(["", "0f" * 16]),
        DEVICES,
    ),
    st.builds(Answer, KEYS, KEYS, st.integers(0, 99), st.booleans()),
    st.builds(Reparent, KEYS, KEYS, st.none() | KEYS),
    st.builds(Resume, KEYS, TASKS),
    st.builds(Erase, KEYS, st.integers(0, 2**53)),
    st.builds(Drop, KEYS, KEYS),
    st.builds(
        Adopt,
        KEYS,
        KEYS,
        st.frozensets(KEYS, max_size=4),
        st.sampled_from(["0f" * 16]),
        st.integers(0, 2**53),
        DEVICES,
    ),
)


@given(MESSAGES)
def test_every_message_reads_back_as_written(message: Message) -> None:
    assert parse_message(encode(message)) == message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (None, "not valid JSON"),
        (b'{"attach": {}, "find": {}}', "one object with one verb"),
        (b'{"merge": {}}', "unknown persons record 'merge'"),
        (
            b'{"reparent": {"to": [0, "u"], "root": ["0", "u"]}}',
            r"root must be \[node index, value\]",
        ),
        (b'{"answer": {"to": [0, "u"], "winner": [0, "v"], "ticket": 1}}', "accepted must be"),
        (
            b'{"attach": {"to": [0, "u"], "anonymous_id": "a", "values": [], "at": 0, '
            b'"source": ""}}',
            "values must not be empty",
        ),
        (b'{"resume": {"to": [0, "u"], "task": []}}', "task must be an object"),
    ],
)
def test_a_bad_record_says_what_is_wrong(raw: bytes | None, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        parse_message(raw)
