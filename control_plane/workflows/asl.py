"""Amazon States Language definitions: parsing, validation and the immutable model.

Guarantees:
- :func:`parse` accepts JSON or YAML text, or an already-loaded mapping, and validates the whole
  definition up front: every path, payload template, intrinsic call, choice rule, retrier and
  catcher is compiled once, so a :class:`Machine` that exists is one the interpreter can run.
  Any fault is an :class:`InvalidDefinition` whose message names its place first, e.g.
  ``States.Check.Next: no state named 'Nope'`` (nested places read like
  ``States.Fan.Branches[0].States.Work.Retry[1].ErrorEquals``).
- What AWS rejects is rejected too: unknown fields for a state type, a missing Next/End, dangling
  transitions, duplicate state names anywhere in the machine, unreachable states, a workflow with
  no terminal state, States.ALL not alone or not in the last retrier/catcher, malformed rules.
- Fields this interpreter deliberately does not implement (JSONata, variables/Assign, heartbeats,
  Credentials, distributed Map's ItemReader/ItemBatcher/ResultWriter) are rejected by name rather
  than silently ignored.
- Pure: no I/O, no clock. The model is frozen dataclasses; the interpreter lives in ``machine``.

Limits (documented choices): definition ≤ 1 MiB (AWS's limit), ≤ 10,000 states in all, state names
≤ 80 characters, Parallel/Map nesting ≤ 16 levels, choice rules nested ≤ 32 levels, integer fields
≤ 99,999,999 (AWS's bound for TimeoutSeconds, IntervalSeconds, MaxAttempts...).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from control_plane.workflows.intrinsics import Call, is_intrinsic, parse_intrinsic
from control_plane.workflows.jsonpath import Path, compile_path

__all__ = [
    "ERROR_ALL",
    "ERROR_BRANCH_FAILED",
    "ERROR_DATA_LIMIT",
    "ERROR_HEARTBEAT_TIMEOUT",
    "ERROR_INTRINSIC",
    "ERROR_NO_CHOICE",
    "ERROR_PARAMETER_PATH",
    "ERROR_PERMISSIONS",
    "ERROR_RESULT_PATH",
    "ERROR_RUNTIME",
    "ERROR_TASK_FAILED",
    "ERROR_TIMEOUT",
    "ERROR_TOLERATED_FAILURE",
    "Catcher",
    "ChoiceState",
    "FailState",
    "Graph",
    "InvalidDefinition",
    "Machine",
    "MapState",
    "ParallelState",
    "PassState",
    "Retrier",
    "Rule",
    "State",
    "SucceedState",
    "TaskState",
    "WaitState",
    "parse",
    "parse_timestamp",
]

MAX_DEFINITION_BYTES = 1_048_576
MAX_STATES = 10_000
MAX_STATE_NAME = 80
MAX_NESTING = 16
MAX_RULE_DEPTH = 32
MAX_INT_FIELD = 99_999_999

# Predefined error names (ASL Appendix A, plus the AWS-specific ones).
ERROR_ALL = "States.ALL"
ERROR_TIMEOUT = "States.Timeout"
ERROR_HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
ERROR_TASK_FAILED = "States.TaskFailed"
ERROR_PERMISSIONS = "States.Permissions"
ERROR_RESULT_PATH = "States.ResultPathMatchFailure"
ERROR_PARAMETER_PATH = "States.ParameterPathFailure"
ERROR_BRANCH_FAILED = "States.BranchFailed"
ERROR_NO_CHOICE = "States.NoChoiceMatched"
ERROR_INTRINSIC = "States.IntrinsicFailure"
ERROR_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"
ERROR_RUNTIME = "States.Runtime"
ERROR_DATA_LIMIT = "States.DataLimitExceeded"


class InvalidDefinition(ValueError):
    """The definition is not a valid (or not a supported) state machine; the message names the place."""


ROOT = compile_path("$")


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TStatic:
    value: Any


@dataclass(frozen=True, slots=True)
class TPath:
    path: Path


@dataclass(frozen=True, slots=True)
class TCall:
    call: Call
    text: str


@dataclass(frozen=True, slots=True)
class TObject:
    items: tuple[tuple[str, Template], ...]


@dataclass(frozen=True, slots=True)
class TArray:
    items: tuple[Template, ...]


Template = TStatic | TPath | TCall | TObject | TArray


@dataclass(frozen=True, slots=True, kw_only=True)
class Retrier:
    error_equals: tuple[str, ...]
    interval_s: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_s: float | None = None
    jitter: str = "NONE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Catcher:
    error_equals: tuple[str, ...]
    next: str
    result_path: Path | None = ROOT  # None: ResultPath null (the raw input goes on)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A choice rule: a boolean (And/Or/Not over ``rules``) or a data test on ``variable``."""

    op: str  # And | Or | Not | a comparison operator without its "Path" suffix
    variable: Path | None = None
    value: Any = None  # the literal operand (a compiled regex for StringMatches, a timestamp key...)
    value_path: Path | None = None  # the operand of a ...Path operator
    rules: tuple[Rule, ...] = ()
    next: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    name: str
    type: str
    next: str | None = None
    end: bool = False
    input_path: Path | None = ROOT  # None: InputPath null (effective input {})
    output_path: Path | None = ROOT  # None: OutputPath null (output {})

    @property
    def terminal(self) -> bool:
        return self.end


@dataclass(frozen=True, slots=True, kw_only=True)
class PassState(State):
    parameters: Template | None = None
    result_path: Path | None = ROOT
    has_result: bool = False
    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskState(State):
    resource: str
    parameters: Template | None = None
    result_selector: Template | None = None
    result_path: Path | None = ROOT
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()
    timeout_s: int | None = None
    timeout_path: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChoiceState(State):
    choices: tuple[Rule, ...]
    default: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitState(State):
    seconds: int | None = None
    seconds_path: Path | None = None
    timestamp: float | None = None  # epoch seconds
    timestamp_path: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SucceedState(State):
    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class FailState(State):
    error: str | None = None
    error_path: Path | Call | None = None
    cause: str | None = None
    cause_path: Path | Call | None = None

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class ParallelState(State):
    branches: tuple[Graph, ...]
    parameters: Template | None = None
    result_selector: Template | None = None
    result_path: Path | None = ROOT
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MapState(State):
    processor: Graph
    items_path: Path = ROOT
    item_selector: Template | None = None
    result_selector: Template | None = None
    result_path: Path | None = ROOT
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()
    max_concurrency: int = 0  # 0: unlimited
    max_concurrency_path: Path | None = None
    tolerated_count: int | None = None
    tolerated_count_path: Path | None = None
    tolerated_percentage: float | None = None
    tolerated_percentage_path: Path | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """A set of states with a start: the machine's top level, a Parallel branch or a Map processor."""

    start_at: str
    states: Mapping[str, State]


@dataclass(frozen=True, slots=True, eq=False)
class Machine:
    """A validated state machine. ``states`` holds every state, nested ones included (names are
    unique across the whole machine, as ASL requires)."""

    root: Graph
    states: Mapping[str, State]
    timeout_s: int | None
    comment: str | None
    definition: Mapping[str, Any]


# --- timestamps ----------------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-](\d{2}):(\d{2}))", re.ASCII)
_EPOCH = _dt.datetime(1970, 1, 1)


def parse_timestamp(value: Any) -> tuple[int, int] | None:
    """An RFC 3339 timestamp (uppercase T, and Z or an offset) as (epoch seconds, nanoseconds)."""
    if not isinstance(value, str):
        return None
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        delta = _dt.datetime(year, month, day, hour, minute, second) - _EPOCH
    except ValueError:
        return None
    seconds = delta.days * 86_400 + delta.seconds
    if m.group(8) != "Z":
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            return None
        offset = oh * 3600 + om * 60
        seconds -= offset if m.group(8)[0] == "+" else -offset
    nanos = int((m.group(7) or "0")[:9].ljust(9, "0"))
    return seconds, nanos


def timestamp_seconds(key: tuple[int, int]) -> float:
    return key[0] + key[1] / 1e9


# --- choice rule operators -----------------------------------------------------------------------

STRING_OPS = ("StringEquals", "StringLessThan", "StringGreaterThan", "StringLessThanEquals",
              "StringGreaterThanEquals")
NUMERIC_OPS = ("NumericEquals", "NumericLessThan", "NumericGreaterThan", "NumericLessThanEquals",
               "NumericGreaterThanEquals")
TIMESTAMP_OPS = ("TimestampEquals", "TimestampLessThan", "TimestampGreaterThan", "TimestampLessThanEquals",
                 "TimestampGreaterThanEquals")
TYPE_OPS = ("IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp")
_PATHABLE = (*STRING_OPS, *NUMERIC_OPS, "BooleanEquals", *TIMESTAMP_OPS)
COMPARISONS = frozenset((*_PATHABLE, *(op + "Path" for op in _PATHABLE), "StringMatches", *TYPE_OPS))


def compile_matches(pattern: str) -> re.Pattern[str]:
    """StringMatches: ``*`` matches any run of characters; ``\\*`` and ``\\\\`` are literals."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "*\\":
                raise ValueError("open escape: only \\* and \\\\ are allowed")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


# --- parsing -------------------------------------------------------------------------------------

class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings (ASL compares them as text it parses itself)."""


_YamlLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse(definition: str | bytes | Mapping[str, Any]) -> Machine:
    """Parse and validate a definition (JSON text, YAML text, or a mapping)."""
    if isinstance(definition, bytes):
        try:
            definition = definition.decode()
        except UnicodeDecodeError as e:
            raise InvalidDefinition(f"definition: not UTF-8 text: {e}") from None
    if isinstance(definition, str):
        if len(definition.encode()) > MAX_DEFINITION_BYTES:
            raise InvalidDefinition(f"definition: larger than {MAX_DEFINITION_BYTES} bytes")
        try:
            doc: Any = json.loads(definition)
        except json.JSONDecodeError:
            try:
                doc = yaml.load(definition, Loader=_YamlLoader)  # a SafeLoader subclass
            except yaml.YAMLError as e:
                raise InvalidDefinition(f"definition: neither JSON nor YAML: {e}") from None
        except RecursionError:
            raise InvalidDefinition("definition: nested too deeply") from None
    else:
        doc = definition
    try:
        _check_json(doc, "")
        text = json.dumps(doc, ensure_ascii=False)
    except RecursionError:
        raise InvalidDefinition("definition: nested too deeply") from None
    if len(text.encode()) > MAX_DEFINITION_BYTES:
        raise InvalidDefinition(f"definition: larger than {MAX_DEFINITION_BYTES} bytes")
    doc = json.loads(text)  # a private copy: the caller may go on mutating its mapping
    if not isinstance(doc, dict):
        raise InvalidDefinition("definition: must be an object with StartAt and States")
    return _Builder(doc).machine()


def _check_json(value: Any, where: str) -> None:
    place = where or "definition"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidDefinition(f"{place}: key {k!r} is not a string")
            _check_json(v, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{place}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDefinition(f"{place}: {value} is not a JSON number")
    elif not (value is None or isinstance(value, (str, int, bool))):
        raise InvalidDefinition(f"{place}: {type(value).__name__} is not a JSON value")


_COMMON = frozenset({"Type", "Comment"})
_IO = frozenset({"InputPath", "OutputPath"})
_FLOW = frozenset({"Next", "End"})
_FIELDS: dict[str, frozenset[str]] = {
    "Pass": _COMMON | _IO | _FLOW | {"Parameters", "ResultPath", "Result"},
    "Task": _COMMON | _IO | _FLOW | {"Resource", "Parameters", "ResultSelector", "ResultPath", "Retry",
                                     "Catch", "TimeoutSeconds", "TimeoutSecondsPath"},
    "Choice": _COMMON | _IO | {"Choices", "Default"},
    "Wait": _COMMON | _IO | _FLOW | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": _COMMON | _IO,
    "Fail": _COMMON | {"Error", "ErrorPath", "Cause", "CausePath"},
    "Parallel": _COMMON | _IO | _FLOW | {"Branches", "Parameters", "ResultSelector", "ResultPath", "Retry",
                                         "Catch"},
    "Map": _COMMON | _IO | _FLOW | {"ItemProcessor", "Iterator", "ItemsPath", "ItemSelector", "Parameters",
                                    "ResultSelector", "ResultPath", "Retry", "Catch", "MaxConcurrency",
                                    "MaxConcurrencyPath", "ToleratedFailureCount",
                                    "ToleratedFailureCountPath", "ToleratedFailurePercentage",
                                    "ToleratedFailurePercentagePath"},
}
# Valid ASL that this interpreter does not implement: rejected by name, with the reason.
_UNSUPPORTED = {
    "Assign": "state machine variables (Assign) are not supported",
    "Arguments": "JSONata fields are not supported (QueryLanguage is JSONPath only)",
    "Output": "JSONata fields are not supported (QueryLanguage is JSONPath only)",
    "Items": "JSONata fields are not supported (QueryLanguage is JSONPath only)",
    "Condition": "JSONata fields are not supported (QueryLanguage is JSONPath only)",
    "HeartbeatSeconds": "task heartbeats are not supported (tasks report only success or failure)",
    "HeartbeatSecondsPath": "task heartbeats are not supported (tasks report only success or failure)",
    "Credentials": "per-task credentials are not supported",
    "ItemReader": "distributed Map (ItemReader) is not supported",
    "ItemBatcher": "distributed Map (ItemBatcher) is not supported",
    "ResultWriter": "distributed Map (ResultWriter) is not supported",
    "Label": "distributed Map (Label) is not supported",
}
_TOP_FIELDS = frozenset({"Comment", "StartAt", "States", "Version", "TimeoutSeconds", "QueryLanguage"})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Builder:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.places: dict[str, str] = {}  # state name -> where it was defined
        self.states: dict[str, State] = {}

    # helpers ------------------------------------------------------------------------------------

    @staticmethod
    def fail(where: str, message: str) -> InvalidDefinition:
        return InvalidDefinition(f"{where}: {message}")

    def fields(self, spec: Mapping[str, Any], allowed: frozenset[str], where: str, kind: str) -> None:
        for key in spec:
            if key in allowed:
                continue
            if key in _UNSUPPORTED:
                raise self.fail(f"{where}.{key}", _UNSUPPORTED[key])
            if key == "QueryLanguage":
                continue  # checked by the caller where it is allowed
            raise self.fail(where, f"field {key!r} is not supported in {kind}")

    def query_language(self, spec: Mapping[str, Any], where: str) -> None:
        if "QueryLanguage" in spec and spec["QueryLanguage"] != "JSONPath":
            raise self.fail(f"{where}.QueryLanguage", f"{spec['QueryLanguage']!r} is not supported "
                            "(only JSONPath)")

    def integer(self, spec: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int | None:
        if key not in spec:
            return None
        v = spec[key]
        if not _is_int(v) or v < minimum or v > MAX_INT_FIELD:
            kind = "a positive" if minimum > 0 else "a non-negative"
            raise self.fail(f"{where}.{key}", f"must be {kind} integer ≤ {MAX_INT_FIELD}, got {v!r}")
        return int(v)

    def string(self, spec: Mapping[str, Any], key: str, where: str) -> str | None:
        if key not in spec:
            return None
        if not isinstance(spec[key], str):
            raise self.fail(f"{where}.{key}", f"must be a string, got {spec[key]!r}")
        return str(spec[key])

    def path(self, spec: Mapping[str, Any], key: str, where: str, *, reference: bool = False,
             nullable: bool = False, context: bool = True) -> Path | None:
        """An optional path field: absent -> ``$``; null -> None (where allowed)."""
        if key not in spec:
            return ROOT
        v = spec[key]
        if v is None:
            if nullable:
                return None
            raise self.fail(f"{where}.{key}", "must be a path, not null")
        try:
            return compile_path(v, reference=reference, context=context)
        except ValueError as e:
            raise self.fail(f"{where}.{key}", str(e)) from None

    def ref_path(self, spec: Mapping[str, Any], key: str, where: str) -> Path | None:
        """An optional Reference Path with no default (None when absent)."""
        if key not in spec:
            return None
        return self.path(spec, key, where, reference=True)

    def exclusive(self, spec: Mapping[str, Any], where: str, *keys: str) -> None:
        present = [k for k in keys if k in spec]
        if len(present) > 1:
            raise self.fail(where, f"{' and '.join(present)} are mutually exclusive")

    def template(self, spec: Mapping[str, Any], key: str, where: str) -> Template | None:
        if key not in spec:
            return None
        if not isinstance(spec[key], dict):
            raise self.fail(f"{where}.{key}", "a payload template must be an object")
        return self.node(spec[key], f"{where}.{key}")

    def node(self, value: Any, where: str) -> Template:
        if isinstance(value, dict):
            items: list[tuple[str, Template]] = []
            seen: set[str] = set()
            dynamic = False
            for k, v in value.items():
                if k.endswith(".$"):
                    out = k[:-2]
                    node: Template = self.dynamic(v, f"{where}.{k}")
                    dynamic = True
                else:
                    out = k
                    node = self.node(v, f"{where}.{k}")
                    dynamic = dynamic or not isinstance(node, TStatic)
                if out in seen:
                    raise self.fail(where, f"duplicate field {out!r} once '.$' is stripped")
                seen.add(out)
                items.append((out, node))
            return TObject(tuple(items)) if dynamic else TStatic(value)
        if isinstance(value, list):
            nodes = tuple(self.node(v, f"{where}[{i}]") for i, v in enumerate(value))
            return TArray(nodes) if any(not isinstance(n, TStatic) for n in nodes) else TStatic(value)
        return TStatic(value)

    def dynamic(self, value: Any, where: str) -> Template:
        if not isinstance(value, str):
            raise self.fail(where, "the value of a '.$' field must be a path or an intrinsic function")
        if value.startswith("$"):
            try:
                return TPath(compile_path(value))
            except ValueError as e:
                raise self.fail(where, str(e)) from None
        return TCall(self.intrinsic(value, where), value)

    def intrinsic(self, value: str, where: str) -> Call:
        if not is_intrinsic(value):
            raise self.fail(where, f"{value!r} is neither a path nor an intrinsic function")
        try:
            return parse_intrinsic(value)
        except ValueError as e:
            raise self.fail(where, f"bad intrinsic function: {e}") from None

    # the machine ----------------------------------------------------------------------------------

    def machine(self) -> Machine:
        doc = self.doc
        self.fields(doc, _TOP_FIELDS, "definition", "a state machine")
        self.query_language(doc, "definition")
        self.string(doc, "Version", "definition")
        comment = self.string(doc, "Comment", "definition")
        timeout = self.integer(doc, "TimeoutSeconds", "definition", minimum=1)
        root = self.graph(doc, "", 0)
        if len(self.states) > MAX_STATES:  # pragma: no cover - caught earlier, while building
            raise self.fail("States", f"more than {MAX_STATES} states")
        return Machine(root=root, states=self.states, timeout_s=timeout, comment=comment, definition=doc)

    def graph(self, spec: Mapping[str, Any], prefix: str, depth: int) -> Graph:
        where = prefix.rstrip(".") or "definition"
        if depth > MAX_NESTING:
            raise self.fail(where, f"Parallel/Map nested deeper than {MAX_NESTING} levels")
        start = spec.get("StartAt")
        if not isinstance(start, str):
            raise self.fail(f"{prefix}StartAt", "required, and must be a state name")
        states_spec = spec.get("States")
        if not isinstance(states_spec, dict) or not states_spec:
            raise self.fail(f"{prefix}States", "required, and must be a non-empty object")
        names = frozenset(states_spec)
        for name in states_spec:
            place = f"{prefix}States.{name}"
            if not name or len(name) > MAX_STATE_NAME:
                raise self.fail(place, f"a state name must have 1 to {MAX_STATE_NAME} characters")
            if name in self.places:
                raise self.fail(place, f"duplicate state name (also at {self.places[name]})")
            self.places[name] = place
            if len(self.places) > MAX_STATES:
                raise self.fail(place, f"more than {MAX_STATES} states in the machine")
        if start not in names:
            raise self.fail(f"{prefix}StartAt", f"no state named {start!r}")
        built: dict[str, State] = {}
        for name, state_spec in states_spec.items():
            built[name] = self.state(name, state_spec, f"{prefix}States.{name}", names, depth)
            self.states[name] = built[name]
        # Reachability from StartAt, as AWS checks it.
        seen = {start}
        todo = [start]
        while todo:
            for nxt in _successors(built[todo.pop()]):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for name in states_spec:
            if name not in seen:
                raise self.fail(f"{prefix}States.{name}", "state is not reachable from StartAt")
        if not any(s.terminal for s in built.values()):
            raise self.fail(f"{prefix}States", "no terminal state (a Succeed, a Fail, or \"End\": true)")
        return Graph(start_at=start, states=built)

    def state(self, name: str, spec: Any, where: str, names: frozenset[str], depth: int) -> State:
        if not isinstance(spec, dict):
            raise self.fail(where, "a state must be an object")
        kind = spec.get("Type")
        if kind not in _FIELDS:
            raise self.fail(f"{where}.Type", f"unknown state type {kind!r} (one of {', '.join(_FIELDS)})")
        self.fields(spec, _FIELDS[kind], where, f"a {kind} state")
        self.query_language(spec, where)
        self.string(spec, "Comment", where)
        common: dict[str, Any] = {"name": name, "type": kind}
        if "Next" in _FIELDS[kind]:
            end = spec.get("End", False)
            if not isinstance(end, bool):
                raise self.fail(f"{where}.End", "must be a boolean")
            if "Next" in spec and end:
                raise self.fail(where, "has both Next and \"End\": true")
            if "Next" not in spec and not end:
                raise self.fail(where, "needs Next or \"End\": true")
            if "Next" in spec:
                common["next"] = self.target(spec, "Next", where, names)
            common["end"] = end
        if "InputPath" in _FIELDS[kind]:
            common["input_path"] = self.path(spec, "InputPath", where, nullable=True)
            common["output_path"] = self.path(spec, "OutputPath", where, nullable=True)
        build = getattr(self, f"state_{kind.lower()}")
        state: State = build(spec, where, names, depth, common)
        return state

    def target(self, spec: Mapping[str, Any], key: str, where: str, names: frozenset[str]) -> str:
        v = spec[key]
        if not isinstance(v, str):
            raise self.fail(f"{where}.{key}", "must be a state name")
        if v not in names:
            raise self.fail(f"{where}.{key}", f"no state named {v!r}")
        return v

    def result_path(self, spec: Mapping[str, Any], where: str) -> Path | None:
        return self.path(spec, "ResultPath", where, reference=True, nullable=True, context=False)

    def error_equals(self, spec: Mapping[str, Any], where: str, last: bool, what: str) -> tuple[str, ...]:
        errors = spec.get("ErrorEquals")
        if not isinstance(errors, list) or not errors or not all(isinstance(e, str) for e in errors):
            raise self.fail(f"{where}.ErrorEquals", "required, a non-empty array of error names")
        if ERROR_ALL in errors:
            if len(errors) > 1:
                raise self.fail(f"{where}.ErrorEquals", f"{ERROR_ALL} must appear alone")
            if not last:
                raise self.fail(f"{where}.ErrorEquals", f"{ERROR_ALL} must be in the last {what}")
        return tuple(errors)

    def retry(self, spec: Mapping[str, Any], where: str) -> tuple[Retrier, ...]:
        if "Retry" not in spec:
            return ()
        items = spec["Retry"]
        if not isinstance(items, list):
            raise self.fail(f"{where}.Retry", "must be an array of retriers")
        out = []
        allowed = frozenset({"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate",
                             "MaxDelaySeconds", "JitterStrategy", "Comment"})
        for i, r in enumerate(items):
            w = f"{where}.Retry[{i}]"
            if not isinstance(r, dict):
                raise self.fail(w, "a retrier must be an object")
            self.fields(r, allowed, w, "a retrier")
            errors = self.error_equals(r, w, i == len(items) - 1, "retrier")
            interval = self.integer(r, "IntervalSeconds", w, minimum=1)
            attempts = self.integer(r, "MaxAttempts", w, minimum=0)
            max_delay = self.integer(r, "MaxDelaySeconds", w, minimum=1)
            backoff = r.get("BackoffRate", 2.0)
            if not _is_number(backoff) or backoff < 1.0 or backoff > MAX_INT_FIELD:
                raise self.fail(f"{w}.BackoffRate", f"must be a number ≥ 1.0, got {backoff!r}")
            jitter = r.get("JitterStrategy", "NONE")
            if jitter not in ("FULL", "NONE"):
                raise self.fail(f"{w}.JitterStrategy", f"must be FULL or NONE, got {jitter!r}")
            out.append(Retrier(
                error_equals=errors,
                interval_s=float(1 if interval is None else interval),
                max_attempts=3 if attempts is None else attempts,
                backoff_rate=float(backoff),
                max_delay_s=None if max_delay is None else float(max_delay),
                jitter=str(jitter),
            ))
        return tuple(out)

    def catch(self, spec: Mapping[str, Any], where: str, names: frozenset[str]) -> tuple[Catcher, ...]:
        if "Catch" not in spec:
            return ()
        items = spec["Catch"]
        if not isinstance(items, list):
            raise self.fail(f"{where}.Catch", "must be an array of catchers")
        out = []
        allowed = frozenset({"ErrorEquals", "Next", "ResultPath", "Comment"})
        for i, c in enumerate(items):
            w = f"{where}.Catch[{i}]"
            if not isinstance(c, dict):
                raise self.fail(w, "a catcher must be an object")
            self.fields(c, allowed, w, "a catcher")
            errors = self.error_equals(c, w, i == len(items) - 1, "catcher")
            if "Next" not in c:
                raise self.fail(w, "needs Next")
            out.append(Catcher(error_equals=errors, next=self.target(c, "Next", w, names),
                               result_path=self.result_path(c, w)))
        return tuple(out)

    # state types ----------------------------------------------------------------------------------

    def state_pass(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                   common: dict[str, Any]) -> State:
        return PassState(**common, parameters=self.template(spec, "Parameters", where),
                         result_path=self.result_path(spec, where), has_result="Result" in spec,
                         result=spec.get("Result"))

    def state_task(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                   common: dict[str, Any]) -> State:
        resource = spec.get("Resource")
        if not isinstance(resource, str) or not resource:
            raise self.fail(f"{where}.Resource", "required, a non-empty string")
        self.exclusive(spec, where, "TimeoutSeconds", "TimeoutSecondsPath")
        return TaskState(
            **common, resource=resource,
            parameters=self.template(spec, "Parameters", where),
            result_selector=self.template(spec, "ResultSelector", where),
            result_path=self.result_path(spec, where),
            retry=self.retry(spec, where), catch=self.catch(spec, where, names),
            timeout_s=self.integer(spec, "TimeoutSeconds", where, minimum=1),
            timeout_path=self.ref_path(spec, "TimeoutSecondsPath", where),
        )

    def state_choice(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                     common: dict[str, Any]) -> State:
        choices = spec.get("Choices")
        if not isinstance(choices, list) or not choices:
            raise self.fail(f"{where}.Choices", "required, a non-empty array of choice rules")
        rules = tuple(self.rule(r, f"{where}.Choices[{i}]", names, True, 0) for i, r in enumerate(choices))
        default = self.target(spec, "Default", where, names) if "Default" in spec else None
        return ChoiceState(**common, choices=rules, default=default)

    def rule(self, spec: Any, where: str, names: frozenset[str], top: bool, depth: int) -> Rule:
        if depth > MAX_RULE_DEPTH:
            raise self.fail(where, f"choice rules nested deeper than {MAX_RULE_DEPTH} levels")
        if not isinstance(spec, dict):
            raise self.fail(where, "a choice rule must be an object")
        keys = set(spec) - {"Comment"}
        nxt = None
        if top:
            if "Next" not in spec:
                raise self.fail(where, "a top-level choice rule needs Next")
            nxt = self.target(spec, "Next", where, names)
            keys.discard("Next")
        elif "Next" in spec:
            raise self.fail(f"{where}.Next", "only top-level choice rules have Next")
        for key in keys:
            if key in _UNSUPPORTED:
                raise self.fail(f"{where}.{key}", _UNSUPPORTED[key])
        boolean = keys & {"And", "Or", "Not"}
        if boolean:
            if len(keys) != 1:
                raise self.fail(where, f"a boolean rule has exactly one of And/Or/Not and nothing else, "
                                f"found {', '.join(sorted(keys))}")
            op = boolean.pop()
            value = spec[op]
            if op == "Not":
                if not isinstance(value, dict):
                    raise self.fail(f"{where}.Not", "must be a choice rule (an object)")
                children: tuple[Rule, ...] = (self.rule(value, f"{where}.Not", names, False, depth + 1),)
            else:
                if not isinstance(value, list) or not value:
                    raise self.fail(f"{where}.{op}", "must be a non-empty array of choice rules")
                children = tuple(self.rule(r, f"{where}.{op}[{i}]", names, False, depth + 1)
                                 for i, r in enumerate(value))
            return Rule(op=op, rules=children, next=nxt)
        if "Variable" not in spec:
            raise self.fail(where, "a choice rule needs Variable and one comparison operator, or And/Or/Not")
        variable = self.path(spec, "Variable", where, reference=True)
        ops = keys - {"Variable"}
        unknown = sorted(ops - COMPARISONS)
        if unknown:
            raise self.fail(where, f"unknown comparison operator {unknown[0]!r}")
        if len(ops) != 1:
            found = ", ".join(sorted(ops)) or "none"
            raise self.fail(where, f"a choice rule needs exactly one comparison operator, found {found}")
        op = ops.pop()
        value = spec[op]
        w = f"{where}.{op}"
        if op.endswith("Path"):
            return Rule(op=op[:-4], variable=variable, value_path=self.path(spec, op, where, reference=True),
                        next=nxt)
        if op in STRING_OPS and not isinstance(value, str):
            raise self.fail(w, f"must be a string, got {value!r}")
        if op == "StringMatches":
            if not isinstance(value, str):
                raise self.fail(w, f"must be a string, got {value!r}")
            try:
                value = compile_matches(value)
            except ValueError as e:
                raise self.fail(w, str(e)) from None
        if op in NUMERIC_OPS and not _is_number(value):
            raise self.fail(w, f"must be a number, got {value!r}")
        if (op == "BooleanEquals" or op in TYPE_OPS) and not isinstance(value, bool):
            raise self.fail(w, f"must be a boolean, got {value!r}")
        if op in TIMESTAMP_OPS:
            key = parse_timestamp(value)
            if key is None:
                raise self.fail(w, f"must be an RFC 3339 timestamp like 2016-03-14T01:59:00Z, got {value!r}")
            value = key
        return Rule(op=op, variable=variable, value=value, next=nxt)

    def state_wait(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                   common: dict[str, Any]) -> State:
        given = [k for k in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath") if k in spec]
        if len(given) != 1:
            raise self.fail(where, "needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath")
        timestamp = None
        if "Timestamp" in spec:
            key = parse_timestamp(spec["Timestamp"])
            if key is None:
                raise self.fail(f"{where}.Timestamp", "must be an RFC 3339 timestamp like "
                                f"2016-03-14T01:59:00Z, got {spec['Timestamp']!r}")
            timestamp = timestamp_seconds(key)
        return WaitState(
            **common, seconds=self.integer(spec, "Seconds", where, minimum=0),
            seconds_path=self.ref_path(spec, "SecondsPath", where), timestamp=timestamp,
            timestamp_path=self.ref_path(spec, "TimestampPath", where),
        )

    def state_succeed(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                      common: dict[str, Any]) -> State:
        return SucceedState(**common)

    def state_fail(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                   common: dict[str, Any]) -> State:
        self.exclusive(spec, where, "Error", "ErrorPath")
        self.exclusive(spec, where, "Cause", "CausePath")
        return FailState(
            **common, error=self.string(spec, "Error", where), cause=self.string(spec, "Cause", where),
            error_path=self.path_or_call(spec, "ErrorPath", where),
            cause_path=self.path_or_call(spec, "CausePath", where),
        )

    def path_or_call(self, spec: Mapping[str, Any], key: str, where: str) -> Path | Call | None:
        if key not in spec:
            return None
        v = spec[key]
        if isinstance(v, str) and not v.startswith("$"):
            return self.intrinsic(v, f"{where}.{key}")
        return self.path(spec, key, where, reference=True)

    def state_parallel(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                       common: dict[str, Any]) -> State:
        branches = spec.get("Branches")
        if not isinstance(branches, list) or not branches:
            raise self.fail(f"{where}.Branches", "required, a non-empty array of branches")
        graphs = []
        for i, b in enumerate(branches):
            w = f"{where}.Branches[{i}]"
            if not isinstance(b, dict):
                raise self.fail(w, "a branch must be an object with StartAt and States")
            self.fields(b, frozenset({"StartAt", "States", "Comment"}), w, "a branch")
            if "QueryLanguage" in b:
                raise self.fail(w, "field 'QueryLanguage' is not supported in a branch")
            graphs.append(self.graph(b, f"{w}.", depth + 1))
        return ParallelState(
            **common, branches=tuple(graphs), parameters=self.template(spec, "Parameters", where),
            result_selector=self.template(spec, "ResultSelector", where),
            result_path=self.result_path(spec, where), retry=self.retry(spec, where),
            catch=self.catch(spec, where, names),
        )

    def state_map(self, spec: Mapping[str, Any], where: str, names: frozenset[str], depth: int,
                  common: dict[str, Any]) -> State:
        self.exclusive(spec, where, "ItemProcessor", "Iterator")
        self.exclusive(spec, where, "ItemSelector", "Parameters")
        self.exclusive(spec, where, "MaxConcurrency", "MaxConcurrencyPath")
        self.exclusive(spec, where, "ToleratedFailureCount", "ToleratedFailureCountPath")
        self.exclusive(spec, where, "ToleratedFailurePercentage", "ToleratedFailurePercentagePath")
        key = "ItemProcessor" if "ItemProcessor" in spec else "Iterator"
        proc = spec.get(key)
        w = f"{where}.{key}"
        if not isinstance(proc, dict):
            raise self.fail(where, "needs ItemProcessor (or the older Iterator), an object with StartAt and "
                            "States")
        self.fields(proc, frozenset({"StartAt", "States", "Comment", "ProcessorConfig"}), w, f"a Map {key}")
        if "QueryLanguage" in proc:
            raise self.fail(w, f"field 'QueryLanguage' is not supported in a Map {key}")
        config = proc.get("ProcessorConfig", {})
        if not isinstance(config, dict):
            raise self.fail(f"{w}.ProcessorConfig", "must be an object")
        self.fields(config, frozenset({"Mode"}), f"{w}.ProcessorConfig", "a ProcessorConfig")
        if config.get("Mode", "INLINE") != "INLINE":
            raise self.fail(f"{w}.ProcessorConfig.Mode",
                            f"{config.get('Mode')!r} is not supported (only INLINE)")
        processor = self.graph(proc, f"{w}.", depth + 1)
        selector_key = "ItemSelector" if "ItemSelector" in spec else "Parameters"
        percentage = spec.get("ToleratedFailurePercentage")
        if percentage is not None and (not _is_number(percentage) or not 0 <= percentage <= 100):
            raise self.fail(f"{where}.ToleratedFailurePercentage", f"must be a number from 0 to 100, got "
                            f"{percentage!r}")
        items_path = self.path(spec, "ItemsPath", where, reference=True)
        assert items_path is not None
        return MapState(
            **common, processor=processor, items_path=items_path,
            item_selector=self.template(spec, selector_key, where),
            result_selector=self.template(spec, "ResultSelector", where),
            result_path=self.result_path(spec, where), retry=self.retry(spec, where),
            catch=self.catch(spec, where, names),
            max_concurrency=self.integer(spec, "MaxConcurrency", where, minimum=0) or 0,
            max_concurrency_path=self.ref_path(spec, "MaxConcurrencyPath", where),
            tolerated_count=self.integer(spec, "ToleratedFailureCount", where, minimum=0),
            tolerated_count_path=self.ref_path(spec, "ToleratedFailureCountPath", where),
            tolerated_percentage=None if percentage is None else float(percentage),
            tolerated_percentage_path=self.ref_path(spec, "ToleratedFailurePercentagePath", where),
        )


def _successors(state: State) -> list[str]:
    out = [state.next] if state.next else []
    if isinstance(state, ChoiceState):
        out.extend(r.next for r in state.choices if r.next)
        if state.default:
            out.append(state.default)
    if isinstance(state, (TaskState, ParallelState, MapState)):
        out.extend(c.next for c in state.catch)
    return out
