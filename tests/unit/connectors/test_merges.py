"""A batch's merges planned at once give what applying them one by one gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.merges import named, plan
from connectors.rows import PersonMerge

PERSONS = st.sampled_from("abcdefg")
MERGES = st.lists(
    st.builds(lambda a, b, v: PersonMerge(a, b, v, "s"), PERSONS, PERSONS, st.integers(1, 9)),
    max_size=8,
)


def one_by_one(
    merges: list[PersonMerge], table: dict[str, str], rows: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The merges table and each row's person, a merge at a time, as the warehouses did
    before batches (read where ``into`` went, write, re-point, re-label)."""
    table, rows = dict(table), dict(rows)
    for merge in merges:
        into = table.get(merge.into, merge.into)
        if into == merge.person_id:
            continue
        table[merge.person_id] = into
        table = {k: into if v == merge.person_id else v for k, v in table.items()}
        rows = {k: into if v == merge.person_id else v for k, v in rows.items()}
    return table, rows


def planned(
    merges: list[PersonMerge], table: dict[str, str], rows: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The same through ``plan``: the rows it names read, its writes applied once."""
    known = {k: v for k, v in table.items() if k in named(merges)}
    done = plan(merges, known)
    table = table | {person: into for person, (into, _) in done.rows.items()}  # upserted
    table = {k: done.moved.get(v, v) for k, v in table.items()}  # then re-pointed
    rows = {k: done.moved.get(v, v) for k, v in rows.items()}
    return table, rows


@given(MERGES, MERGES)
@settings(max_examples=500, deadline=None)
def test_a_planned_batch_is_the_merges_one_by_one(
    before: list[PersonMerge], batch: list[PersonMerge]
) -> None:
    rows = {f"row-{p}": p for p in "abcdefg"}
    table, rows = one_by_one(before, {}, rows)  # what earlier batches left
    assert planned(batch, table, rows) == one_by_one(batch, table, rows)
