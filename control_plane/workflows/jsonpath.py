"""JSONPath for the Amazon States Language: Paths, Reference Paths and ResultPath writes.

Guarantees:
- Pure: no I/O, no clock, no global state (compiled paths are immutable values).
- Reference Paths (``$``, ``.field``, ``['field']``, ``["field"]``, ``[n]``, with the spec's backslash
  escapes such as ``$.store\\.book``) are parsed here, by hand; they are the only paths that can
  be written to (ResultPath) and the only ones ASL allows in Variable, ItemsPath, SecondsPath...
- Any other Path (``[*]``, slices, unions, filters, ``..``) is compiled with jsonpath-ng, imported
  lazily: a definition that uses only Reference Paths never needs it.
- A *definite* path (a Reference Path) yields exactly one value or raises :class:`PathNotFound`;
  an *indefinite* one yields the list of its matches, possibly empty (Jayway's behaviour, which
  AWS Step Functions follows).
- Values are never mutated: :func:`put` copies only the containers along the written path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Path", "PathNotFound", "compile_path", "put"]

# Characters with a JSONPath meaning that a Reference Path's field name cannot hold unescaped.
_RESERVED = frozenset("@,:?*()]'\" ")


class PathNotFound(LookupError):
    """The path is well formed but does not apply to the data (missing field, index out of range...)."""


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled Path. ``context`` is true for ``$$...`` paths (applied to the Context Object)."""

    text: str
    context: bool
    steps: tuple[str | int, ...] | None  # None: not a Reference Path (see ``query``)
    query: Any = None  # the jsonpath-ng expression of a non-reference path

    @property
    def is_reference(self) -> bool:
        return self.steps is not None

    @property
    def is_root(self) -> bool:
        return self.steps == ()

    def find(self, data: Any) -> Any:
        """The value (definite path) or the list of values (indefinite path) at this path."""
        if self.steps is not None:
            node = data
            for step in self.steps:
                if isinstance(step, str):
                    if not isinstance(node, dict) or step not in node:
                        raise PathNotFound(f"no field {step!r} for path {self.text!r}")
                    node = node[step]
                else:
                    if not isinstance(node, list) or step >= len(node):
                        raise PathNotFound(f"no index {step} for path {self.text!r}")
                    node = node[step]
            return node
        try:
            matches = self.query.find(data)
        except Exception as e:  # jsonpath-ng raises assorted errors on mistyped data
            raise PathNotFound(f"path {self.text!r} cannot be applied: {e}") from e
        values = [m.value for m in matches]
        if _definite(self.query):
            if not values:
                raise PathNotFound(f"nothing found for path {self.text!r}")
            return values[0]
        return values


def compile_path(text: Any, *, reference: bool = False, context: bool = True) -> Path:
    """Compile a Path; ValueError (with the reason) if it is not one (of the required kind)."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise ValueError(f"{text!r} is not a path (a path is a string starting with '$')")
    is_context = text.startswith("$$")
    if is_context and not context:
        raise ValueError(f"{text!r}: a path into the context object ($$) is not allowed here")
    body = text[1:] if is_context else text
    steps = _parse_reference(body)
    if steps is not None:
        return Path(text, is_context, steps)
    if reference:
        raise ValueError(f"{text!r} is not a Reference Path (only .field, ['field'] and [n] are allowed)")
    return Path(text, is_context, None, _compile_general(text, body))


def put(data: Any, steps: tuple[str | int, ...], value: Any) -> Any:
    """``data`` with ``value`` written at ``steps``, creating missing objects on the way.

    Raises PathNotFound when the write cannot apply (a field into a non-object, an index past the
    end of an array or into a non-array). Only the containers along the path are copied.
    """
    if not steps:
        return value
    head, rest = steps[0], steps[1:]
    if isinstance(head, str):
        if not isinstance(data, dict):
            raise PathNotFound(f"cannot set field {head!r} in a {_kind(data)}")
        copy = dict(data)
        copy[head] = put(data.get(head, {}), rest, value)
        return copy
    if not isinstance(data, list) or head >= len(data):
        raise PathNotFound(f"cannot set index {head} in a {_kind(data)}")
    items = list(data)
    items[head] = put(data[head], rest, value)
    return items


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return f"array of {len(value)}"
    return "null" if value is None else type(value).__name__


def _parse_reference(text: str) -> tuple[str | int, ...] | None:
    """The steps of a Reference Path, or None if ``text`` (starting with '$') is not one."""
    steps: list[str | int] = []
    i, n = 1, len(text)
    while i < n:
        c = text[i]
        if c == ".":
            i += 1
            if i >= n or text[i] in ".[":
                return None  # "$.", descendant "..", or ".[" are not reference syntax
            name: list[str] = []
            while i < n and text[i] not in ".[":
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        return None
                    name.append(text[i + 1])
                    i += 2
                    continue
                if ch in _RESERVED:
                    return None
                name.append(ch)
                i += 1
            steps.append("".join(name))
        elif c == "[":
            close = _bracket(text, i)
            if close is None:
                return None
            step, i = close
            steps.append(step)
        else:
            return None
    return tuple(steps)


def _bracket(text: str, i: int) -> tuple[str | int, int] | None:
    """Parse ``['name']``, ``["name"]`` or ``[digits]`` at ``text[i] == '['``: (step, next index)."""
    n = len(text)
    j = i + 1
    if j < n and text[j] in "'\"":
        quote = text[j]
        j += 1
        name: list[str] = []
        while j < n and text[j] != quote:
            if text[j] == "\\" and j + 1 < n:
                name.append(text[j + 1])
                j += 2
                continue
            name.append(text[j])
            j += 1
        if j + 1 >= n or text[j + 1] != "]":
            return None
        return "".join(name), j + 2
    k = j
    while k < n and text[k].isdigit() and text[k].isascii():
        k += 1
    if k == j or k >= n or text[k] != "]":
        return None
    return int(text[j:k]), k + 1


def _compile_general(text: str, body: str) -> Any:
    try:
        from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
        from jsonpath_ng.ext.parser import parse
    except ImportError as e:  # pragma: no cover - jsonpath-ng ships with the dev environment
        raise ValueError(f"{text!r} needs jsonpath-ng (only Reference Paths work without it)") from e
    try:
        return parse(body)
    except (JsonPathLexerError, JsonPathParserError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{text!r} is not a valid JSONPath: {e}") from e
    except Exception as e:
        raise ValueError(f"{text!r} is not a valid JSONPath: {e}") from e


def _definite(query: Any) -> bool:
    """Whether a jsonpath-ng expression can only ever select one node."""
    from jsonpath_ng.jsonpath import Child, Fields, Index, Root

    if isinstance(query, Root):
        return True
    if isinstance(query, Child):
        return _definite(query.left) and _definite(query.right)
    if isinstance(query, Fields):
        return len(query.fields) == 1 and query.fields[0] != "*"
    if isinstance(query, Index):
        return len(query.indices) == 1
    return False
