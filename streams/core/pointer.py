"""JSON pointers (RFC 6901), parsed once and used to read and write event fields.

>>> p = Pointer.parse("/user/email")
>>> p.get({"user": {"email": "a@b.com"}})
'a@b.com'
>>> doc = {"user": {"anonymous_id": "1"}}
>>> p.set(doc, "a@b.com")
True
>>> doc
{'user': {'anonymous_id': '1', 'email': 'a@b.com'}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Pointer", "PointerError"]

_MISSING = object()


class PointerError(ValueError):
    """A JSON pointer is not well formed."""


def _unescape(token: str, text: str) -> str:
    rest = token.replace("~0", "").replace("~1", "")
    if "~" in rest:
        raise PointerError(f"JSON pointer {text!r}: '~' must be followed by 0 or 1 (RFC 6901)")
    return token.replace("~1", "/").replace("~0", "~")


@dataclass(frozen=True, slots=True)
class Pointer:
    """A parsed JSON pointer to one field of an event (never the whole document)."""

    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pointer:
        if not isinstance(text, str) or not text.startswith("/"):
            raise PointerError(f"JSON pointer {text!r} must be a string starting with '/'")
        tokens = tuple(_unescape(token, text) for token in text[1:].split("/"))
        return cls(text, tokens)

    @property
    def column(self) -> str:
        """The flattened column name Jitsu uses: ``/user/email`` → ``user_email``."""
        return "_".join(self.tokens)

    def get(self, doc: Any) -> Any:
        """The value at this pointer, or None where any step of the path is missing."""
        node = doc
        for token in self.tokens:
            if isinstance(node, dict):
                node = node.get(token, _MISSING)
                if node is _MISSING:
                    return None
            elif isinstance(node, list) and token.isdigit():
                index = int(token)
                if index >= len(node):
                    return None
                node = node[index]
            else:
                return None
        return node

    def set(self, doc: dict[str, Any], value: Any) -> bool:
        """Write ``value`` at this pointer, creating missing objects on the way.

        Returns False, leaving ``doc`` unchanged, where a non-object value stands in the
        way (``/user/email`` in ``{"user": "bob"}``): we never overwrite data to make room.
        """
        node: Any = doc
        for token in self.tokens[:-1]:  # first check, so that a refusal changes nothing
            if node is None:
                break
            if not isinstance(node, dict):
                return False
            node = node.get(token)
        if node is not None and not isinstance(node, dict):
            return False
        node = doc
        for token in self.tokens[:-1]:
            child = node.get(token)
            if child is None:
                child = node[token] = {}
            node = child
        node[self.tokens[-1]] = value
        return True

    def __str__(self) -> str:
        return self.text
