"""JSON pointers (RFC 6901) as used for the configured nodes."""

from __future__ import annotations

from typing import Any

import pytest

from streams.core.pointer import Pointer, PointerError


@pytest.mark.parametrize("text", ["", "user/id", "/bad~2escape", "/trailing~"])
def test_malformed_pointers_are_refused(text: str) -> None:
    with pytest.raises(PointerError):
        Pointer.parse(text)


def test_escapes_are_undone_in_order() -> None:
    assert Pointer.parse("/a~1b/c~0d/~01").tokens == ("a/b", "c~d", "~1")


@pytest.mark.parametrize(
    ("text", "doc", "expected"),
    [
        ("/user/email", {"user": {"email": "a@b.com"}}, "a@b.com"),
        ("/user/email", {"user": {}}, None),
        ("/user/email", {"user": "bob"}, None),
        ("/items/1/id", {"items": [{"id": 1}, {"id": 2}]}, 2),
        ("/items/5/id", {"items": [{"id": 1}]}, None),
        ("/items/x", {"items": [1]}, None),
        ("/a~1b", {"a/b": 3}, 3),
        ("/", {"": "empty key"}, "empty key"),
    ],
)
def test_get(text: str, doc: Any, expected: Any) -> None:
    assert Pointer.parse(text).get(doc) == expected


def test_set_creates_missing_objects() -> None:
    doc: dict[str, Any] = {"user": {"anonymous_id": "1"}, "traits": None}
    assert Pointer.parse("/user/email").set(doc, "a@b.com")
    assert Pointer.parse("/traits/profile/email").set(doc, "a@b.com")
    assert doc == {
        "user": {"anonymous_id": "1", "email": "a@b.com"},
        "traits": {"profile": {"email": "a@b.com"}},
    }


@pytest.mark.parametrize(
    "doc", [{"user": "bob"}, {"user": {"email": ["x"]}, "a": 1}, {"user": [1]}]
)
def test_set_refuses_to_overwrite_a_non_object_in_the_way(doc: dict[str, Any]) -> None:
    before = repr(doc)
    assert not Pointer.parse("/user/email/address").set(doc, "a@b.com")
    assert repr(doc) == before


def test_column_is_jitsus_flattened_name() -> None:
    assert Pointer.parse("/user/email").column == "user_email"
    assert Pointer.parse("/eventn_ctx_event_id").column == "eventn_ctx_event_id"
