"""A batch's person merges, applied in order in memory before one write per table.

Each warehouse keeps ``<table>_person_merges``: every person merged away and the person it
went to last. Applying merges one by one costs a read and a few writes each; ``plan``
applies a whole batch's merges, in order, to what the table holds for the persons they
name, so that the warehouse writes the result once: the merge rows (``Plan.rows``) and one
re-pointing of everything that went to a person merged away now (``Plan.moved``). The
result is the one the merges give one by one. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connectors.rows import PersonMerge

__all__ = ["Plan", "named", "plan"]


@dataclass(slots=True)
class Plan:
    """What a batch of merges writes."""

    #: person merged away -> (the person it went to last, the version of its merge)
    rows: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: person merged away in this batch -> where whatever went to it goes now
    moved: dict[str, str] = field(default_factory=dict)


def named(merges: Sequence[PersonMerge]) -> set[str]:
    """The persons whose merge rows ``plan`` needs to know: both sides of every merge."""
    return {m.person_id for m in merges} | {m.into for m in merges}


def plan(merges: Sequence[PersonMerge], known: Mapping[str, str]) -> Plan:
    """The merges applied in order to ``known`` (the table's ``from -> into`` rows for the
    persons ``named`` gives): each ``into`` followed to where it went, a merge into itself
    skipped, and what went to a person merged away re-pointed."""
    went = dict(known)
    done = Plan()
    for merge in merges:
        into = went.get(merge.into, merge.into)
        if into == merge.person_id:
            continue
        went[merge.person_id] = into
        done.rows[merge.person_id] = (into, merge.version)
        for person, target in went.items():
            if target == merge.person_id:
                went[person] = into
        for person, (target, version) in done.rows.items():
            if target == merge.person_id:
                done.rows[person] = (into, version)
        for person, target in done.moved.items():
            if target == merge.person_id:
                done.moved[person] = into
        # rows went at the person's first merge of the batch: a later one (the person
        # merged again) finds none of them left
        done.moved.setdefault(merge.person_id, into)
    return done
