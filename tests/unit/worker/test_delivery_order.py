"""The order in which the transport delivers a stream partition's records (no Kafka)."""

from __future__ import annotations

from streams.worker.feed import DeliveryOrder, Verdict

TP = tuple[str, int]
A, B = ("events", 0), ("events", 1)


def _fetch(order: DeliveryOrder[TP], *records: tuple[TP, int]) -> list[str]:
    """One fetch's records through the order, as the consumer does; what happened to each."""
    seen = []
    for tp, offset in records:
        verdict = order.verdict(tp, offset)
        if verdict in (Verdict.DELIVER, Verdict.GAP):
            order.delivered(tp, offset)
        seen.append(f"{offset}:{verdict.value}")
    return seen


def test_records_in_order_are_delivered_and_copies_below_are_skipped() -> None:
    order: DeliveryOrder[TP] = DeliveryOrder()
    order.start(A, 5)
    assert _fetch(order, (A, 5), (A, 6), (A, 4), (A, 6), (A, 7)) == [
        "5:deliver", "6:deliver", "4:copy", "6:copy", "7:deliver",
    ]  # fmt: skip
    assert order.take_behind() == {}


def test_a_record_above_the_next_offset_holds_the_partition_back_and_seeks_it_there() -> None:
    # a takeover: records fetched from the old position (43..) arrive after a seek to 10
    order: DeliveryOrder[TP] = DeliveryOrder()
    order.start(A, 10)
    order.start(B, 0)
    assert _fetch(order, (A, 43), (B, 0), (A, 44), (A, 10)) == [
        "43:behind", "0:deliver", "44:behind", "10:behind",
    ]  # fmt: skip
    assert order.take_behind() == {A: 10}
    # the next fetch comes from 10, in order: nothing was lost or reordered
    assert _fetch(order, (A, 10), (A, 11)) == ["10:deliver", "11:deliver"]


def test_only_a_fetch_from_exactly_the_next_offset_that_starts_above_it_is_a_gap() -> None:
    order: DeliveryOrder[TP] = DeliveryOrder()
    order.start(A, 3)
    assert _fetch(order, (A, 7)) == ["7:behind"]  # not yet: it may be a stale fetch
    assert order.take_behind() == {A: 3}
    assert _fetch(order, (A, 7), (A, 8)) == ["7:gap", "8:deliver"]  # compacted: 3-6 empty
    assert _fetch(order, (A, 12)) == ["12:behind"]  # a later jump is held back again
    assert order.take_behind() == {A: 9}


def test_a_run_of_exactly_the_next_offsets_is_delivered_at_once_anything_else_is_not() -> None:
    order: DeliveryOrder[TP] = DeliveryOrder()
    order.start(A, 5)
    assert order.run(A, 5, 7, 3)  # 5, 6, 7
    assert order.next[A] == 8
    assert not order.run(A, 9, 10, 2)  # starts above the next offset
    assert not order.run(A, 7, 9, 3)  # starts below it: copies
    assert not order.run(A, 8, 11, 3)  # a hole inside
    assert not order.run(B, 0, 1, 2)  # never sought: no next offset known
    assert order.next[A] == 8
    assert order.verdict(A, 10) is Verdict.BEHIND
    assert not order.run(A, 8, 8, 1)  # the partition is held back in this fetch
