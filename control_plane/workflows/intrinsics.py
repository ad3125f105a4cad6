"""ASL intrinsic functions (``States.Format(...)`` and friends): parsing and evaluation.

Guarantees:
- Parsing happens once, when the definition is parsed: a malformed call, an unknown function or
  a wrong number of arguments is a ValueError there, never a surprise at run time.
- Evaluation is pure and deterministic. ``States.MathRandom`` and ``States.UUID`` draw from a
  seed the caller derives from the execution (so a replayed step gives the same value); an
  explicit MathRandom seed argument is honoured as AWS does (same seed, same number).
- Any failure at run time (wrong argument type, a path that finds nothing, bad JSON...) is an
  :class:`IntrinsicError`, which the interpreter reports as ``States.IntrinsicFailure``.
- Semantics follow the ASL spec (Appendix B) and AWS where AWS is narrower: StringSplit splits on
  any of the delimiter's characters and drops empty parts; MathRandom's bounds are inclusive;
  JsonMerge only merges shallowly (``true`` for the deep flag is an error, as on AWS).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.workflows.jsonpath import Path, PathNotFound, compile_path

__all__ = ["Call", "IntrinsicError", "Literal", "evaluate", "parse_intrinsic"]

MAX_STRING = 10_000  # Base64Encode/Decode and Hash inputs (AWS's limit)
MAX_RANGE = 1_000  # ArrayRange's result
MAX_DEPTH = 10  # nested calls


class IntrinsicError(Exception):
    """An intrinsic function failed at run time (States.IntrinsicFailure)."""


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal argument; ``chunks`` splits a string literal at its unescaped ``{}``."""

    value: Any
    chunks: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Literal | Path | Call, ...]


# name -> (min args, max args or None for unbounded)
_ARITY: dict[str, tuple[int, int | None]] = {
    "States.Format": (1, None),
    "States.StringToJson": (1, 1),
    "States.JsonToString": (1, 1),
    "States.Array": (0, None),
    "States.ArrayPartition": (2, 2),
    "States.ArrayContains": (2, 2),
    "States.ArrayRange": (3, 3),
    "States.ArrayGetItem": (2, 2),
    "States.ArrayLength": (1, 1),
    "States.ArrayUnique": (1, 1),
    "States.Base64Encode": (1, 1),
    "States.Base64Decode": (1, 1),
    "States.Hash": (2, 2),
    "States.JsonMerge": (3, 3),
    "States.MathRandom": (2, 3),
    "States.MathAdd": (2, 2),
    "States.StringSplit": (2, 2),
    "States.UUID": (0, 0),
}

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._")


def is_intrinsic(text: str) -> bool:
    """Whether a ``.$`` value looks like a function call (rather than a path)."""
    head = text.split("(", 1)[0].strip()
    return "(" in text and bool(head) and all(c in _NAME_CHARS for c in head)


def parse_intrinsic(text: str) -> Call:
    """Parse ``States.Name(arg, ...)``; ValueError naming the problem."""
    parser = _Parser(text)
    call = parser.call(0)
    parser.skip_ws()
    if parser.i != len(text):
        raise ValueError(f"unexpected {text[parser.i:]!r} after the intrinsic function call")
    return call


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def skip_ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def call(self, depth: int) -> Call:
        if depth > MAX_DEPTH:
            raise ValueError(f"intrinsic functions nested deeper than {MAX_DEPTH}")
        self.skip_ws()
        start = self.i
        while self.i < len(self.text) and self.text[self.i] in _NAME_CHARS:
            self.i += 1
        name = self.text[start : self.i]
        if not name:
            raise ValueError(f"expected an intrinsic function name at {self.text[start:]!r}")
        if name not in _ARITY:
            raise ValueError(f"unknown intrinsic function {name!r}")
        self.skip_ws()
        if self.i >= len(self.text) or self.text[self.i] != "(":
            raise ValueError(f"expected '(' after {name}")
        self.i += 1
        args: list[Literal | Path | Call] = []
        self.skip_ws()
        if self.i < len(self.text) and self.text[self.i] == ")":
            self.i += 1
        else:
            while True:
                args.append(self.arg(depth))
                self.skip_ws()
                if self.i >= len(self.text):
                    raise ValueError(f"unterminated call to {name}")
                c = self.text[self.i]
                self.i += 1
                if c == ")":
                    break
                if c != ",":
                    raise ValueError(f"expected ',' or ')' in the arguments of {name}, got {c!r}")
        low, high = _ARITY[name]
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if low == high else f"{low}+" if high is None else f"{low}-{high}"
            raise ValueError(f"{name} takes {want} argument(s), got {len(args)}")
        return Call(name, tuple(args))

    def arg(self, depth: int) -> Literal | Path | Call:
        self.skip_ws()
        if self.i >= len(self.text):
            raise ValueError("missing argument")
        c = self.text[self.i]
        if c == "'":
            return self.string()
        if c == "$":
            return compile_path(self.path_text())
        rest = self.text[self.i :]
        for word, value in (("null", None), ("true", True), ("false", False)):
            if rest.startswith(word) and not (len(rest) > len(word) and rest[len(word)] in _NAME_CHARS):
                self.i += len(word)
                return Literal(value)
        if c == "-" or c.isdigit():
            return self.number()
        return self.call(depth + 1)

    def string(self) -> Literal:
        self.i += 1  # the opening quote
        chunks: list[str] = []
        current: list[str] = []
        text = self.text
        while True:
            if self.i >= len(text):
                raise ValueError("unterminated string literal")
            c = text[self.i]
            if c == "\\":
                if self.i + 1 >= len(text) or text[self.i + 1] not in "'{}\\":
                    raise ValueError("open escape: only \\', \\{, \\} and \\\\ are allowed in a string")
                current.append(text[self.i + 1])
                self.i += 2
                continue
            if c == "'":
                self.i += 1
                break
            if c == "{" and text.startswith("{}", self.i):
                chunks.append("".join(current))
                current = []
                self.i += 2
                continue
            current.append(c)
            self.i += 1
        chunks.append("".join(current))
        return Literal("{}".join(chunks), tuple(chunks))

    def number(self) -> Literal:
        start = self.i
        if self.text[self.i] == "-":
            self.i += 1
        while self.i < len(self.text) and (self.text[self.i].isdigit() or self.text[self.i] in ".eE+-"):
            self.i += 1
        raw = self.text[start : self.i]
        try:
            value: int | float = int(raw) if raw.lstrip("-").isdigit() else float(raw)
        except ValueError:
            raise ValueError(f"bad number {raw!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"bad number {raw!r}")
        return Literal(value)

    def path_text(self) -> str:
        start = self.i
        depth = 0
        quote: str | None = None
        while self.i < len(self.text):
            c = self.text[self.i]
            if quote:
                if c == "\\":
                    self.i += 1
                elif c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
            elif c in "[(":
                depth += 1
            elif c in "])":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                break
            self.i += 1
        return self.text[start : self.i].strip()


# --- evaluation ----------------------------------------------------------------------------------

Resolver = Callable[[Path], Any]
Seeder = Callable[[], bytes]


def evaluate(call: Call, resolve: Resolver, seed: Seeder) -> Any:
    """Evaluate a parsed call; ``resolve`` applies a Path (raising PathNotFound), ``seed`` gives
    fresh deterministic entropy for MathRandom/UUID."""
    args = [_arg(a, resolve, seed) for a in call.args]
    fn = _FUNCTIONS[call.name]
    try:
        return fn(call, args, seed)
    except IntrinsicError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise IntrinsicError(f"{call.name}: {e}") from e


def _arg(arg: Literal | Path | Call, resolve: Resolver, seed: Seeder) -> Any:
    if isinstance(arg, Literal):
        return arg.value
    if isinstance(arg, Path):
        try:
            return resolve(arg)
        except PathNotFound as e:
            raise IntrinsicError(f"argument {arg.text!r}: {e}") from e
    return evaluate(arg, resolve, seed)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise IntrinsicError(message)


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(v: Any) -> str:
    """A value's natural string form for States.Format."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None or _is_number(v):
        return json.dumps(v)
    raise IntrinsicError(f"States.Format cannot format a {type(v).__name__} (only strings, numbers, "
                         "booleans and null)")


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _key(v: Any) -> str:
    """An equality key for JSON values (1 and true differ; object key order does not matter)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _format(call: Call, args: list[Any], seed: Seeder) -> Any:
    template, values = args[0], args[1:]
    _need(isinstance(template, str), "States.Format: the template must be a string")
    first = call.args[0]
    chunks = first.chunks if isinstance(first, Literal) and first.chunks is not None else tuple(
        template.split("{}"))
    _need(len(chunks) - 1 == len(values),
          f"States.Format: the template has {len(chunks) - 1} placeholder(s) for {len(values)} argument(s)")
    out = [chunks[0]]
    for value, chunk in zip(values, chunks[1:], strict=True):
        out.append(_text(value))
        out.append(chunk)
    return "".join(out)


def _string_to_json(call: Call, args: list[Any], seed: Seeder) -> Any:
    _need(isinstance(args[0], str), "States.StringToJson: the argument must be a string")
    try:
        return json.loads(args[0])
    except json.JSONDecodeError as e:
        raise IntrinsicError(f"States.StringToJson: not JSON: {e}") from e


def _json_to_string(call: Call, args: list[Any], seed: Seeder) -> Any:
    return _dumps(args[0])


def _array(call: Call, args: list[Any], seed: Seeder) -> Any:
    return list(args)


def _array_partition(call: Call, args: list[Any], seed: Seeder) -> Any:
    items, size = args
    _need(isinstance(items, list), "States.ArrayPartition: the first argument must be an array")
    _need(_is_int(size) and size > 0, "States.ArrayPartition: the chunk size must be a positive integer")
    n = int(size)
    return [items[i : i + n] for i in range(0, len(items), n)]


def _array_contains(call: Call, args: list[Any], seed: Seeder) -> Any:
    items, wanted = args
    _need(isinstance(items, list), "States.ArrayContains: the first argument must be an array")
    key = _key(wanted)
    return any(_key(item) == key for item in items)


def _array_range(call: Call, args: list[Any], seed: Seeder) -> Any:
    _need(all(_is_int(a) for a in args), "States.ArrayRange: all arguments must be integers")
    start, end, step = (int(a) for a in args)
    _need(step != 0, "States.ArrayRange: the step must not be zero")
    count = max(0, (end - start) // step + 1)
    _need(count <= MAX_RANGE, f"States.ArrayRange: the range would hold {count} items (at most {MAX_RANGE})")
    return list(range(start, end + (1 if step > 0 else -1), step))


def _array_get_item(call: Call, args: list[Any], seed: Seeder) -> Any:
    items, index = args
    _need(isinstance(items, list), "States.ArrayGetItem: the first argument must be an array")
    _need(_is_int(index) and index >= 0, "States.ArrayGetItem: the index must be a non-negative integer")
    _need(int(index) < len(items), f"States.ArrayGetItem: index {int(index)} is out of range ({len(items)})")
    return items[int(index)]


def _array_length(call: Call, args: list[Any], seed: Seeder) -> Any:
    _need(isinstance(args[0], list), "States.ArrayLength: the argument must be an array")
    return len(args[0])


def _array_unique(call: Call, args: list[Any], seed: Seeder) -> Any:
    _need(isinstance(args[0], list), "States.ArrayUnique: the argument must be an array")
    seen: set[str] = set()
    out = []
    for item in args[0]:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _base64_encode(call: Call, args: list[Any], seed: Seeder) -> Any:
    data = args[0]
    _need(isinstance(data, str), "States.Base64Encode: the argument must be a string")
    _need(len(data) <= MAX_STRING, f"States.Base64Encode: the string is longer than {MAX_STRING} characters")
    return base64.b64encode(data.encode()).decode("ascii")


def _base64_decode(call: Call, args: list[Any], seed: Seeder) -> Any:
    data = args[0]
    _need(isinstance(data, str), "States.Base64Decode: the argument must be a string")
    _need(len(data) <= MAX_STRING, f"States.Base64Decode: the string is longer than {MAX_STRING} characters")
    try:
        return base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise IntrinsicError(f"States.Base64Decode: not base64 of UTF-8 text: {e}") from e


_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def _hash(call: Call, args: list[Any], seed: Seeder) -> Any:
    data, algorithm = args
    text = data if isinstance(data, str) else _dumps(data)
    _need(len(text) <= MAX_STRING, f"States.Hash: the data is longer than {MAX_STRING} characters")
    _need(algorithm in _HASHES, f"States.Hash: unknown algorithm {algorithm!r} (one of {', '.join(_HASHES)})")
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _json_merge(call: Call, args: list[Any], seed: Seeder) -> Any:
    left, right, deep = args
    _need(isinstance(left, dict) and isinstance(right, dict), "States.JsonMerge: both values must be objects")
    _need(isinstance(deep, bool), "States.JsonMerge: the third argument must be a boolean")
    _need(not deep, "States.JsonMerge: only the shallow mode (false) is supported, as on AWS")
    return {**left, **right}


def _math_random(call: Call, args: list[Any], seed: Seeder) -> Any:
    _need(all(_is_number(a) for a in args[:2]), "States.MathRandom: start and end must be numbers")
    start, end = round(args[0]), round(args[1])
    _need(start <= end, "States.MathRandom: start must not exceed end")
    if len(args) == 3:
        _need(_is_int(args[2]), "States.MathRandom: the seed must be an integer")
        material = f"seed:{int(args[2])}".encode()
    else:
        material = seed()
    return random.Random(hashlib.sha256(material).digest()).randint(start, end)


def _math_add(call: Call, args: list[Any], seed: Seeder) -> Any:
    _need(all(_is_int(a) for a in args), "States.MathAdd: both arguments must be integers")
    return int(args[0]) + int(args[1])


def _string_split(call: Call, args: list[Any], seed: Seeder) -> Any:
    text, delimiters = args
    _need(isinstance(text, str) and isinstance(delimiters, str),
          "States.StringSplit: both arguments must be strings")
    if not delimiters:
        return [text] if text else []
    parts = [text]
    for d in delimiters:
        parts = [piece for part in parts for piece in part.split(d)]
    return [p for p in parts if p]


def _uuid(call: Call, args: list[Any], seed: Seeder) -> Any:
    return str(uuid.UUID(bytes=hashlib.sha256(seed()).digest()[:16], version=4))


_FUNCTIONS: dict[str, Callable[[Call, list[Any], Seeder], Any]] = {
    "States.Format": _format,
    "States.StringToJson": _string_to_json,
    "States.JsonToString": _json_to_string,
    "States.Array": _array,
    "States.ArrayPartition": _array_partition,
    "States.ArrayContains": _array_contains,
    "States.ArrayRange": _array_range,
    "States.ArrayGetItem": _array_get_item,
    "States.ArrayLength": _array_length,
    "States.ArrayUnique": _array_unique,
    "States.Base64Encode": _base64_encode,
    "States.Base64Decode": _base64_decode,
    "States.Hash": _hash,
    "States.JsonMerge": _json_merge,
    "States.MathRandom": _math_random,
    "States.MathAdd": _math_add,
    "States.StringSplit": _string_split,
    "States.UUID": _uuid,
}
assert _FUNCTIONS.keys() == _ARITY.keys()
