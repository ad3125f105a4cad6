"""Amazon EventBridge event patterns and input transformers, as a pure module (stdlib only).

`compile_pattern` validates a pattern (a JSON object, given as a mapping or as JSON text) once and
returns a `Pattern` whose `matches(event)` is cheap: every field's alternatives are precompiled into
one predicate (sets for exact values, tuples for prefixes and suffixes, a linear-time wildcard
matcher, a bounds check for numeric ranges), so matching walks the event only where the pattern
names fields and never parses, copies or serialises anything. No I/O, no clock, no threads, no
global state: a `Pattern` may be shared freely.

What a pattern means (EventBridge's semantics; the Event Ruler engine's where the guide is silent):

- A pattern is an object. An object value descends into the event; an array value lists the
  alternatives for a leaf, any of which may match. Every field of the pattern must match (AND).
  Fields of the event that the pattern does not name are ignored.
- Exact values are strings, numbers, `true`, `false` and `null`, each matching only its own JSON
  type: `5` matches `5` and `5.0` (numbers compare by value), never `true` or `"5"`; `null` does not
  match a missing field, and `""` does not match `null`.
- An array in the event matches if any of its elements does (nested arrays are flattened). Inside an
  array of objects, a sub-pattern must be satisfied by one element (array-consistent matching), and
  `exists: false` there means no element has the field.
- Operators, each `{"name": operand}` as one alternative: `prefix` and `suffix` (a string, or
  `{"equals-ignore-case": string}`), `equals-ignore-case`, `wildcard` (`*` is any run of characters,
  `\\*` a literal star, `\\\\` a backslash; `**` is invalid), `anything-but` (a string, a number, a
  list of only strings or only numbers, or `{"prefix"|"suffix"|"wildcard"|"equals-ignore-case":
  string or list of strings}`), `numeric` (`["=", x]`, or one lower bound `>`/`>=`, one upper bound
  `<`/`<=`, or a lower then an upper bound), `exists` (`true`/`false`, leaves only: a field holding an
  object, or an empty array, does not exist), and `cidr` (an IPv4 or IPv6 block). `$or`, a list of at
  least two objects, may stand at any object level.
- String operators match only strings, `numeric` and `cidr` only numbers and address strings, and
  `anything-but` any present leaf value not excluded (so `{"anything-but": "a"}` matches `5`).

Limits: a pattern is at most 2048 characters of compact JSON (EventBridge's quota; it counts the raw
text, whitespace included) and at most 32 objects deep (a guard, not an EventBridge limit); numeric
operands lie within +-5e9, and event numbers outside that range never match `numeric` (as in
EventBridge, whose numeric index covers that range).

`compile_transform` is EventBridge's InputTransformer: up to 100 `input_paths` (`$`, `$.a.b`,
`$.a[0]`, `$.a[*]`, `$.a.*`) and an `input_template` with `<name>` placeholders plus the predefined
`<aws.events.rule-name>`, `<aws.events.rule-arn>`, `<aws.events.event.ingestion-time>`,
`<aws.events.event>` (the event without `detail`) and `<aws.events.event.json>` (the whole event);
see `Transform` for the substitution rules.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_PATHS",
    "MAX_PATTERN_CHARS",
    "MAX_TEMPLATE_CHARS",
    "NUMERIC_LIMIT",
    "InvalidPattern",
    "InvalidTransform",
    "Pattern",
    "Transform",
    "compile_pattern",
    "compile_transform",
    "matches",
]

MAX_PATTERN_CHARS: Final = 2048  # EventBridge quota: "Event pattern: 2048 characters maximum"
MAX_DEPTH: Final = 32  # objects nested in a pattern ($or alternatives count as a level)
NUMERIC_LIMIT: Final = 5e9  # numeric operands and matched event numbers lie within +-this
MAX_INPUT_PATHS: Final = 100  # EventBridge: "You can define up to 100 variables"
MAX_PATH_CHARS: Final = 256
MAX_TEMPLATE_CHARS: Final = 8192  # PutTargets' InputTemplate length limit


class InvalidPattern(ValueError):
    """A pattern that EventBridge would reject; the message names the fault and where it is."""


class InvalidTransform(ValueError):
    """An input transformer (paths or template) that cannot be compiled; the message says why."""


# --- matching machinery -------------------------------------------------------------------------
# A compiled check scores an event object: 0 = no match, 1 = matched only through absent fields
# (`exists: false`), 2 = matched with some present value. The score matters inside arrays of
# objects: an element matching only through absence proves nothing about the other elements.

_Check = Callable[[Mapping[str, Any]], int]
_Pred = Callable[[Any], bool]

_MISSING: Final[Any] = object()
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_OR: Final = "$or"
_OPERATORS: Final = (
    "anything-but", "cidr", "equals-ignore-case", "exists", "numeric", "prefix", "suffix", "wildcard",
)
# Event Ruler refuses these as field names inside $or (operators, and names it keeps for later).
_RESERVED_IN_OR: Final = frozenset({
    *_OPERATORS, "exactly", "=", "<", "<=", ">", ">=", "regex", "not-wildcard", "not-equals-ignore-case",
    "date-after", "date-on-or-after", "date-before", "date-on-or-before", "in-date-range",
    "ip-address-in-range", "ip-address-not-in-range",
})


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled event pattern. `text` is its canonical (compact) JSON."""

    text: str
    _check: _Check = field(repr=False, compare=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether `event` (a JSON object, already parsed) matches the pattern."""
        return self._check(event) > 0


def compile_pattern(pattern: Mapping[str, Any] | str) -> Pattern:
    """Validate `pattern` (a mapping, or its JSON text) and compile it; raise InvalidPattern."""
    if isinstance(pattern, str):
        try:
            parsed = json.loads(pattern, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except InvalidPattern:
            raise
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise InvalidPattern(f"pattern is not valid JSON: {exc}") from None
    else:
        parsed = pattern
    if not isinstance(parsed, Mapping):
        raise InvalidPattern(f"pattern must be a JSON object, got {_show(parsed)}")
    try:
        text = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidPattern(f"pattern is not JSON: {exc}") from None
    if len(text) > MAX_PATTERN_CHARS:
        raise InvalidPattern(
            f"pattern is {len(text)} characters of JSON, more than the {MAX_PATTERN_CHARS} allowed"
        )
    return Pattern(text, _compile_object(parsed, "", 1, in_or=False))


def matches(pattern: Pattern | Mapping[str, Any] | str, event: Mapping[str, Any]) -> bool:
    """One-off convenience: compile `pattern` (unless compiled already) and match `event`."""
    compiled = pattern if isinstance(pattern, Pattern) else compile_pattern(pattern)
    return compiled.matches(event)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidPattern(f"pattern is not valid JSON: duplicate field {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidPattern(f"pattern is not valid JSON: {name} is not a JSON number")


def _show(value: Any) -> str:
    """A value as an error message shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _at(path: str) -> str:
    return path or "pattern"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- compiling objects ---------------------------------------------------------------------------


def _compile_object(obj: Mapping[str, Any], path: str, depth: int, *, in_or: bool) -> _Check:
    if depth > MAX_DEPTH:
        raise InvalidPattern(f"{_at(path)}: nested deeper than {MAX_DEPTH} objects")
    if not obj:
        raise InvalidPattern(f"{_at(path)}: an empty object is not allowed")
    leaves: list[_Check] = []
    objects: list[_Check] = []
    ors: list[_Check] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidPattern(f"{_at(path)}: field names must be strings, got {_show(key)}")
        if key == _OR:
            ors.append(_compile_or(value, _join(path, _OR), depth))
            continue
        where = _join(path, key)
        if in_or and key in _RESERVED_IN_OR:
            raise InvalidPattern(f"{where}: {key!r} is an operator name, not a field name inside $or")
        if isinstance(value, Mapping):
            objects.append(_descend(key, _compile_object(value, where, depth + 1, in_or=in_or)))
        elif isinstance(value, (list, tuple)):
            leaves.append(_compile_leaf(key, value, where))
        else:
            raise InvalidPattern(f"{where}: must be an object or an array of values, got {_show(value)}")
    return _all_of((*leaves, *objects, *ors))  # cheap leaf checks first; AND does not care


def _compile_or(value: Any, where: str, depth: int) -> _Check:
    if not isinstance(value, (list, tuple)):
        raise InvalidPattern(f"{where}: needs a list of at least 2 objects, got {_show(value)}")
    if len(value) < 2:
        raise InvalidPattern(f"{where}: needs at least 2 alternatives, got {len(value)}")
    branches: list[_Check] = []
    for i, branch in enumerate(value):
        if not isinstance(branch, Mapping):
            raise InvalidPattern(f"{where}[{i}]: each alternative must be an object, got {_show(branch)}")
        branches.append(_compile_object(branch, f"{where}[{i}]", depth + 1, in_or=True))
    return _any_of(tuple(branches))


def _all_of(checks: tuple[_Check, ...]) -> _Check:
    if len(checks) == 1:
        return checks[0]

    def check(obj: Mapping[str, Any]) -> int:
        best = 1
        for one in checks:
            score = one(obj)
            if not score:
                return 0
            if score == 2:
                best = 2
        return best

    return check


def _any_of(branches: tuple[_Check, ...]) -> _Check:
    def check(obj: Mapping[str, Any]) -> int:
        best = 0
        for branch in branches:
            score = branch(obj)
            if score == 2:
                return 2
            if score > best:
                best = score
        return best

    return check


def _descend(key: str, sub: _Check) -> _Check:
    """Check `sub` against the object at `key`; an array of objects needs one element to match."""
    absent = sub({})  # what the sub-pattern says when the object is not there (only exists: false)

    def check(obj: Mapping[str, Any]) -> int:
        value = obj.get(key, _MISSING)
        kind = type(value)
        if kind is dict:
            return sub(value)
        if kind in _SCALARS or value is _MISSING:
            return absent
        if kind is list or kind is tuple:
            elements = _objects_in(value, [])
            if not elements:
                return absent
            everywhere = True  # the sub-pattern holds, through absence, in every element
            for element in elements:
                score = sub(element)
                if score == 2:
                    return 2
                if not score:
                    everywhere = False
            return 1 if everywhere else 0
        if isinstance(value, Mapping):
            return sub(value)
        return absent

    return check


def _objects_in(values: Sequence[Any], out: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    for value in values:
        if isinstance(value, Mapping):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            _objects_in(value, out)
    return out


def _scalars_in(values: Sequence[Any], out: list[Any]) -> list[Any]:
    for value in values:
        kind = type(value)
        if kind in _SCALARS:
            out.append(value)
        elif kind is list or kind is tuple:
            _scalars_in(value, out)
    return out


# --- compiling leaves ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Leaf:
    """The alternatives of one leaf, gathered by kind while compiling."""

    exact: set[Any] = field(default_factory=set)  # strings, numbers, None
    bools: set[bool] = field(default_factory=set)
    folded: set[str] = field(default_factory=set)  # equals-ignore-case, casefolded
    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    folded_prefixes: list[str] = field(default_factory=list)
    folded_suffixes: list[str] = field(default_factory=list)
    preds: list[_Pred] = field(default_factory=list)
    any_present: bool = False  # exists: true (any present leaf value)
    absent_ok: bool = False  # exists: false


def _compile_leaf(key: str, alternatives: Sequence[Any], where: str) -> _Check:
    if not alternatives:
        raise InvalidPattern(f"{where}: an empty array matches nothing; give at least one value")
    leaf = _Leaf()
    for i, alt in enumerate(alternatives):
        at = f"{where}[{i}]"
        if isinstance(alt, bool):
            leaf.bools.add(alt)
        elif alt is None or isinstance(alt, str):
            leaf.exact.add(alt)
        elif _is_number(alt):
            leaf.exact.add(_finite(alt, at))
        elif isinstance(alt, Mapping):
            _compile_operator(alt, at, leaf)
        else:
            raise InvalidPattern(
                f"{at}: a value must be a string, number, true, false, null or an operator object, "
                f"got {_show(alt)}"
            )
    return _leaf_check(key, _value_predicate(leaf), 1 if leaf.absent_ok else 0)


def _finite(value: int | float, where: str) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPattern(f"{where}: {value!r} is not a JSON number")
    return value


def _leaf_check(key: str, pred: _Pred, absent: int) -> _Check:
    def check(obj: Mapping[str, Any]) -> int:
        value = obj.get(key, _MISSING)
        kind = type(value)
        if kind in _SCALARS:
            return 2 if pred(value) else 0
        if kind is list or kind is tuple:
            values = _scalars_in(value, [])
            if not values:
                return absent  # an empty array (or one of objects) has no leaf value
            for one in values:
                if pred(one):
                    return 2
            return 0
        return absent  # missing, or an object (not a leaf), or not a JSON value

    return check


def _value_predicate(leaf: _Leaf) -> _Pred:
    """One predicate over a JSON scalar for all of a leaf's alternatives."""
    if leaf.any_present:
        return _always
    preds = list(leaf.preds)
    if leaf.folded:
        preds.append(_folded_in(frozenset(leaf.folded)))
    if leaf.prefixes:
        preds.append(_starts(tuple(leaf.prefixes)))
    if leaf.suffixes:
        preds.append(_ends(tuple(leaf.suffixes)))
    if leaf.folded_prefixes:
        preds.append(_folded_starts(tuple(leaf.folded_prefixes)))
    if leaf.folded_suffixes:
        preds.append(_folded_ends(tuple(leaf.folded_suffixes)))
    exact = frozenset(leaf.exact)  # no bools in here, so 1 never matches true (True == 1 in Python)
    bools = frozenset(leaf.bools)
    if not preds and not bools:
        if all(isinstance(v, str) for v in exact):
            return exact.__contains__  # a string equals only strings: no type guard needed
        return lambda value: type(value) is not bool and value in exact
    extra = tuple(preds)

    def pred(value: Any) -> bool:
        if type(value) is bool:
            if value in bools:
                return True
        elif value in exact:
            return True
        for one in extra:  # noqa: SIM110 (a plain loop: no generator on the hot path)
            if one(value):
                return True
        return False

    return pred


def _always(value: Any) -> bool:
    return True


def _starts(prefixes: tuple[str, ...]) -> _Pred:
    return lambda value: type(value) is str and value.startswith(prefixes)


def _ends(suffixes: tuple[str, ...]) -> _Pred:
    return lambda value: type(value) is str and value.endswith(suffixes)


def _folded_in(values: frozenset[str]) -> _Pred:
    return lambda value: type(value) is str and value.casefold() in values


def _folded_starts(prefixes: tuple[str, ...]) -> _Pred:
    return lambda value: type(value) is str and value.casefold().startswith(prefixes)


def _folded_ends(suffixes: tuple[str, ...]) -> _Pred:
    return lambda value: type(value) is str and value.casefold().endswith(suffixes)


def _compile_operator(expr: Mapping[str, Any], where: str, leaf: _Leaf) -> None:
    if len(expr) != 1:
        if not expr:
            raise InvalidPattern(f"{where}: an empty object is not a match expression")
        names = ", ".join(sorted(str(k) for k in expr))
        raise InvalidPattern(f"{where}: a match expression has one operator, got {len(expr)}: {names}")
    ((name, operand),) = expr.items()
    at = f"{where}.{name}"
    if name == "prefix" or name == "suffix":
        text, folded = _string_or_ignore_case(operand, at, name)
        if name == "prefix":
            (leaf.folded_prefixes if folded else leaf.prefixes).append(text.casefold() if folded else text)
        else:
            (leaf.folded_suffixes if folded else leaf.suffixes).append(text.casefold() if folded else text)
    elif name == "equals-ignore-case":
        leaf.folded.add(_string(operand, at).casefold())
    elif name == "wildcard":
        _add_wildcard(_string(operand, at), at, leaf)
    elif name == "anything-but":
        leaf.preds.append(_compile_anything_but(operand, at))
    elif name == "numeric":
        leaf.preds.append(_compile_numeric(operand, at))
    elif name == "exists":
        if not isinstance(operand, bool):
            raise InvalidPattern(f"{at}: needs true or false, got {_show(operand)}")
        if operand:
            leaf.any_present = True
        else:
            leaf.absent_ok = True
    elif name == "cidr":
        leaf.preds.append(_compile_cidr(operand, at))
    else:
        raise InvalidPattern(f"{where}: unknown operator {name!r} (known: {', '.join(_OPERATORS)})")


def _string(operand: Any, where: str) -> str:
    if not isinstance(operand, str):
        raise InvalidPattern(f"{where}: needs a string, got {_show(operand)}")
    return operand


def _string_or_ignore_case(operand: Any, where: str, name: str) -> tuple[str, bool]:
    """`"text"` or `{"equals-ignore-case": "text"}`; returns the text and whether case is ignored."""
    if isinstance(operand, str):
        return operand, False
    if isinstance(operand, Mapping):
        if len(operand) == 1 and "equals-ignore-case" in operand:
            return _string(operand["equals-ignore-case"], f"{where}.equals-ignore-case"), True
        keys = ", ".join(sorted(str(k) for k in operand)) or "nothing"
        raise InvalidPattern(f"{where}: only equals-ignore-case can go inside {name}, got {keys}")
    raise InvalidPattern(f'{where}: needs a string or {{"equals-ignore-case": string}}, got {_show(operand)}')


# --- wildcard ------------------------------------------------------------------------------------


def _wildcard_segments(text: str, where: str) -> list[str]:
    """Split a wildcard at its unescaped stars into literal segments (one segment: no star)."""
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*":
            if i + 1 < len(text) and text[i + 1] == "*":
                raise InvalidPattern(f"{where}: consecutive '*' at position {i} are not allowed")
            segments.append("".join(current))
            current = []
        elif char == "\\":
            if i + 1 < len(text) and text[i + 1] in "*\\":
                current.append(text[i + 1])
                i += 1
            else:
                raise InvalidPattern(
                    f"{where}: invalid escape at position {i} (only \\* and \\\\ may be escaped)"
                )
        else:
            current.append(char)
        i += 1
    segments.append("".join(current))
    return segments


def _add_wildcard(text: str, where: str, leaf: _Leaf) -> None:
    segments = _wildcard_segments(text, where)
    if len(segments) == 1:
        leaf.exact.add(segments[0])  # no star: an exact string
    else:
        leaf.preds.append(_glob(segments))


def _glob(segments: list[str]) -> _Pred:
    """Match strings against literal segments separated by `*`, in linear time (no regex backtracking)."""
    first, last, middle = segments[0], segments[-1], tuple(s for s in segments[1:-1] if s)
    shortest = sum(len(s) for s in segments)

    def pred(value: Any) -> bool:
        if type(value) is not str or len(value) < shortest:
            return False
        if not value.startswith(first) or not value.endswith(last):
            return False
        pos, end = len(first), len(value) - len(last)
        for segment in middle:  # leftmost placement of each segment is optimal
            found = value.find(segment, pos, end)
            if found < 0:
                return False
            pos = found + len(segment)
        return True

    return pred


# --- anything-but --------------------------------------------------------------------------------


def _compile_anything_but(operand: Any, where: str) -> _Pred:
    if isinstance(operand, Mapping):
        return _compile_anything_but_of(operand, where)
    if isinstance(operand, bool) or operand is None:
        raise InvalidPattern(
            f"{where}: needs a string, a number, a list of strings or of numbers, or an object "
            f"(prefix, suffix, wildcard or equals-ignore-case), got {_show(operand)}"
        )
    if isinstance(operand, str) or _is_number(operand):
        values: list[Any] = [operand]
    elif isinstance(operand, (list, tuple)):
        values = list(operand)
        if not values:
            raise InvalidPattern(f"{where}: the list is empty")
    else:
        raise InvalidPattern(f"{where}: needs a string, a number or a list, got {_show(operand)}")
    for i, value in enumerate(values):
        if not (isinstance(value, str) or _is_number(value)):
            raise InvalidPattern(f"{where}[{i}]: only strings and numbers are excluded, not {_show(value)}")
        if _is_number(value):
            _finite(value, f"{where}[{i}]")
    if len({isinstance(v, str) for v in values}) > 1:
        raise InvalidPattern(f"{where}: a list must hold only strings or only numbers, not both")
    excluded = frozenset(values)
    if isinstance(values[0], str):
        return lambda value: not (type(value) is str and value in excluded)
    return lambda value: type(value) is bool or value not in excluded  # strings, null: never excluded


def _compile_anything_but_of(operand: Mapping[str, Any], where: str) -> _Pred:
    if len(operand) != 1:
        keys = ", ".join(sorted(str(k) for k in operand)) or "nothing"
        raise InvalidPattern(
            f"{where}: needs exactly one of prefix, suffix, wildcard, equals-ignore-case, got {keys}"
        )
    ((name, inner),) = operand.items()
    at = f"{where}.{name}"
    if name not in ("prefix", "suffix", "wildcard", "equals-ignore-case"):
        raise InvalidPattern(
            f"{where}: unsupported operator {name!r} inside anything-but "
            "(prefix, suffix, wildcard or equals-ignore-case)"
        )
    if isinstance(inner, str):
        texts = [inner]
    elif isinstance(inner, (list, tuple)) and inner:
        texts = [_string(text, f"{at}[{i}]") for i, text in enumerate(inner)]
    else:
        raise InvalidPattern(f"{at}: needs a string or a non-empty list of strings, got {_show(inner)}")
    if name in ("prefix", "suffix") and "" in texts:
        raise InvalidPattern(f"{at}: an empty {name} is not allowed")
    if name == "prefix":
        starts = _starts(tuple(texts))
        return lambda value: not starts(value)
    if name == "suffix":
        ends = _ends(tuple(texts))
        return lambda value: not ends(value)
    if name == "equals-ignore-case":
        folded = _folded_in(frozenset(t.casefold() for t in texts))
        return lambda value: not folded(value)
    leaf = _Leaf()
    for text in texts:
        _add_wildcard(text, at, leaf)
    excluded = _value_predicate(leaf)
    return lambda value: not (type(value) is str and excluded(value))


# --- numeric -------------------------------------------------------------------------------------

_LOWER: Final = {">": True, ">=": False}  # operator -> open bound
_UPPER: Final = {"<": True, "<=": False}


def _compile_numeric(operand: Any, where: str) -> _Pred:
    if not isinstance(operand, (list, tuple)) or not operand:
        raise InvalidPattern(f'{where}: needs a list like [">", 0, "<=", 5], got {_show(operand)}')
    if len(operand) > 4:
        raise InvalidPattern(f"{where}: at most one lower and one upper bound, got {len(operand)} items")
    pairs: list[tuple[str, float]] = []
    for i in range(0, len(operand), 2):
        op = operand[i]
        value = operand[i + 1] if i + 1 < len(operand) else _MISSING
        if not isinstance(op, str) or not _is_number(value):
            then = "nothing" if value is _MISSING else _show(value)
            raise InvalidPattern(f"{where}: needs an operator and a number, got {_show(op)} then {then}")
        if op not in ("=", *_LOWER, *_UPPER):
            raise InvalidPattern(f"{where}: unknown operator {op!r} (use =, <, <=, > or >=)")
        number = float(_finite(value, where))
        if not -NUMERIC_LIMIT <= number <= NUMERIC_LIMIT:
            raise InvalidPattern(f"{where}: {value!r} is outside the supported range -5e9..5e9")
        pairs.append((op, number))
    if pairs[0][0] == "=":
        if len(pairs) > 1:
            raise InvalidPattern(f"{where}: '=' stands alone, got more after it")
        target = pairs[0][1]
        return lambda value: type(value) in (int, float) and value == target  # target is within range
    if len(pairs) == 2:
        (low_op, low), (high_op, high) = pairs
        if low_op not in _LOWER or high_op not in _UPPER:
            raise InvalidPattern(
                f"{where}: a range is a lower bound (> or >=) then an upper bound (< or <=), "
                f"got {low_op!r} then {high_op!r}"
            )
        if low >= high:
            raise InvalidPattern(f"{where}: empty range, {operand[1]!r} is not below {operand[3]!r}")
        return _range(low, _LOWER[low_op], high, _UPPER[high_op])
    op, number = pairs[0]
    if op in _LOWER:
        return _range(number, _LOWER[op], NUMERIC_LIMIT, False)
    return _range(-NUMERIC_LIMIT, False, number, _UPPER[op])


def _range(low: float, low_open: bool, high: float, high_open: bool) -> _Pred:
    def pred(value: Any) -> bool:
        kind = type(value)
        if kind is not int and kind is not float:
            return False  # bools, strings ("5" is not a number) and the rest
        # the bounds lie within +-NUMERIC_LIMIT (open ends default to it), so larger numbers fail here
        if value < low or (low_open and value == low):
            return False
        return not (value > high or (high_open and value == high))

    return pred


# --- cidr ----------------------------------------------------------------------------------------


def _compile_cidr(operand: Any, where: str) -> _Pred:
    if not isinstance(operand, str):
        raise InvalidPattern(f'{where}: needs a string like "10.0.0.0/24", got {_show(operand)}')
    if operand.count("/") != 1:
        raise InvalidPattern(f"{where}: {operand!r} is not a CIDR block (one '/' and a prefix length)")
    try:
        network = ipaddress.ip_network(operand, strict=False)
    except ValueError as exc:
        raise InvalidPattern(f"{where}: {operand!r} is not a CIDR block ({exc})") from None

    def pred(value: Any) -> bool:
        if type(value) is not str:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return address.version == network.version and address in network

    return pred


# --- input transformer ---------------------------------------------------------------------------

_NAME: Final = re.compile(r"[A-Za-z0-9_\-]+")
_PLACEHOLDER: Final = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_PATH_STEP: Final = re.compile(r"\.([^.\[\]*\s]+)|\.(\*)|\[(\d+)\]|\[(\*)\]")
_EVENT_VARS: Final = ("aws.events.event", "aws.events.event.json")  # JSON values only, never in a string
_CONTEXT_VARS: Final = {
    "aws.events.rule-name": "rule_name",
    "aws.events.rule-arn": "rule_arn",
    "aws.events.event.ingestion-time": "ingestion_time",
}

_Step = str | int | None  # a key, an index, or None for a wildcard


@dataclass(frozen=True, slots=True)
class _Slot:
    """A placeholder in the template: which variable, and where (JSON value, inside a string, text)."""

    name: str
    mode: str  # "json" | "string" | "text"


@dataclass(frozen=True, slots=True)
class Transform:
    """A compiled InputTransformer.

    Substitution follows EventBridge: a template whose first character (after whitespace) is `{`,
    `[` or `"` is JSON. There a placeholder outside quotes is replaced by the value as JSON (a string
    gains its quotes, an object stays an object; a missing path gives `null`), and one inside a
    string by the value as text (a missing path gives nothing). Any other template is plain text: a
    string value goes in as is, anything else as its JSON. A template that is a single placeholder
    yields that value. Unlike EventBridge, values put inside a JSON string are escaped, so a value
    holding a quote cannot break the output.
    """

    input_paths: tuple[tuple[str, str], ...]
    input_template: str
    _steps: Mapping[str, tuple[tuple[_Step, ...], bool]] = field(repr=False, compare=False)
    _parts: tuple[str | _Slot, ...] = field(repr=False, compare=False)

    def render(
        self,
        event: Mapping[str, Any],
        *,
        rule_name: str | None = None,
        rule_arn: str | None = None,
        ingestion_time: str | None = None,
    ) -> str:
        """The transformed input as text, as EventBridge would deliver it."""
        context = {"rule_name": rule_name, "rule_arn": rule_arn, "ingestion_time": ingestion_time}
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = self._value(part.name, event, context)
            if part.mode == "json":
                out.append("null" if value is _MISSING else _dump(value))
            elif value is _MISSING:
                continue
            else:
                text = value if isinstance(value, str) else _dump(value)
                out.append(json.dumps(text, ensure_ascii=False)[1:-1] if part.mode == "string" else text)
        return "".join(out)

    def apply(
        self,
        event: Mapping[str, Any],
        *,
        rule_name: str | None = None,
        rule_arn: str | None = None,
        ingestion_time: str | None = None,
    ) -> Any:
        """The transformed input: its parsed JSON if it is valid JSON, else the text."""
        if len(self._parts) == 1 and isinstance(self._parts[0], _Slot):
            context = {"rule_name": rule_name, "rule_arn": rule_arn, "ingestion_time": ingestion_time}
            value = self._value(self._parts[0].name, event, context)
            return None if value is _MISSING else json.loads(_dump(value))  # a copy, detached
        text = self.render(event, rule_name=rule_name, rule_arn=rule_arn, ingestion_time=ingestion_time)
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _value(self, name: str, event: Mapping[str, Any], context: Mapping[str, str | None]) -> Any:
        if name in self._steps:
            steps, many = self._steps[name]
            return _extract(event, steps, many)
        if name == "aws.events.event":
            return {k: v for k, v in event.items() if k != "detail"}
        if name == "aws.events.event.json":
            return event
        given = context[_CONTEXT_VARS[name]]
        return _MISSING if given is None else given


def compile_transform(input_paths: Mapping[str, str], input_template: str) -> Transform:
    """Validate an InputTransformer (its InputPathsMap and InputTemplate); raise InvalidTransform."""
    if not isinstance(input_paths, Mapping):
        raise InvalidTransform(f"input_paths must be a mapping of names to paths, got {_show(input_paths)}")
    if len(input_paths) > MAX_INPUT_PATHS:
        raise InvalidTransform(
            f"input_paths has {len(input_paths)} paths, more than the {MAX_INPUT_PATHS} allowed"
        )
    steps: dict[str, tuple[tuple[_Step, ...], bool]] = {}
    for name, path in input_paths.items():
        if not isinstance(name, str) or not name:
            raise InvalidTransform(f"input_paths: a name must be a non-empty string, got {_show(name)}")
        if name.lower().startswith("aws."):
            raise InvalidTransform(f"input_paths[{name!r}]: names starting with 'aws.' are reserved")
        if _NAME.fullmatch(name) is None or len(name) > 256:
            raise InvalidTransform(
                f"input_paths[{name!r}]: a name is up to 256 letters, digits, '_' or '-'"
            )
        steps[name] = _compile_path(path, f"input_paths[{name!r}]")
    if not isinstance(input_template, str):
        raise InvalidTransform(f"input_template must be a string, got {_show(input_template)}")
    if len(input_template) > MAX_TEMPLATE_CHARS:
        raise InvalidTransform(
            f"input_template is {len(input_template)} characters, more than the {MAX_TEMPLATE_CHARS} allowed"
        )
    parts = _compile_template(input_template, steps)
    return Transform(
        tuple((name, str(path)) for name, path in input_paths.items()), input_template, steps, parts
    )


def _compile_path(path: Any, where: str) -> tuple[tuple[_Step, ...], bool]:
    if not isinstance(path, str):
        raise InvalidTransform(f"{where}: a path must be a string, got {_show(path)}")
    if not path.startswith("$"):
        raise InvalidTransform(f"{where}: a path starts with '$', got {path!r}")
    if len(path) > MAX_PATH_CHARS:
        raise InvalidTransform(f"{where}: a path is at most {MAX_PATH_CHARS} characters")
    steps: list[_Step] = []
    pos = 1
    while pos < len(path):
        step = _PATH_STEP.match(path, pos)
        if step is None:
            raise InvalidTransform(
                f"{where}: cannot read {path!r} at position {pos} (use $.key, [index] or * steps)"
            )
        key, _, index, _ = step.groups()
        steps.append(key if key is not None else int(index) if index is not None else None)
        pos = step.end()
    return tuple(steps), None in steps


def _extract(event: Any, steps: tuple[_Step, ...], many: bool) -> Any:
    """The value at a path, `_MISSING` if there is none; with a wildcard, the list of all values."""
    current = [event]
    for step in steps:
        found: list[Any] = []
        for value in current:
            if isinstance(step, str):
                if isinstance(value, Mapping) and step in value:
                    found.append(value[step])
            elif step is None:
                if isinstance(value, Mapping):
                    found.extend(value.values())
                elif isinstance(value, (list, tuple)):
                    found.extend(value)
            elif isinstance(value, (list, tuple)) and step < len(value):
                found.append(value[step])
        if not found:
            return _MISSING
        current = found
    return current if many else current[0]


def _compile_template(template: str, steps: Mapping[str, Any]) -> tuple[str | _Slot, ...]:
    is_json = template.lstrip()[:1] in ("{", "[", '"')
    parts: list[str | _Slot] = []
    in_string = escaped = False
    text_start = pos = 0
    while pos < len(template):
        char = template[pos]
        if char == "<":
            found = _PLACEHOLDER.match(template, pos)
            if found is not None:
                name = found.group(1)
                if name not in steps and name not in _CONTEXT_VARS and name not in _EVENT_VARS:
                    raise InvalidTransform(
                        f"input_template: unknown placeholder <{name}> (define it in input_paths)"
                    )
                mode = "string" if in_string else "json" if is_json else "text"
                lone = template.strip() == found.group(0)
                if name in _EVENT_VARS and mode != "json" and not lone:
                    raise InvalidTransform(
                        f"input_template: <{name}> can only be the value of a JSON field, not inside a string"
                    )
                if pos > text_start:
                    parts.append(template[text_start:pos])
                parts.append(_Slot(name, mode))
                pos = text_start = found.end()
                escaped = False
                continue
        if is_json:
            if escaped:
                escaped = False
            elif in_string and char == "\\":
                escaped = True
            elif char == '"':
                in_string = not in_string
        pos += 1
    if text_start < len(template):
        parts.append(template[text_start:])
    stripped = tuple(p for p in parts if not (isinstance(p, str) and not p.strip()))
    if len(stripped) == 1 and isinstance(stripped[0], _Slot):
        return stripped  # a lone placeholder: the value itself
    return tuple(parts)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
