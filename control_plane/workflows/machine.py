"""The ASL interpreter: a pure step function over a JSON execution state.

Guarantees:
- Pure: no I/O, no clock reads, no threads, no asyncio, no global state. Time comes in as ``now``;
  randomness (Retry's FULL jitter, States.MathRandom, States.UUID) is drawn from hashes of the
  execution id and the step's deterministic site, so replaying a step gives the same result.
- :func:`start` and :func:`advance` return a :class:`Step`: the new execution state (a plain
  JSON-serialisable dict: dict/list/str/int/float/bool/None only), the actions the executor must
  perform (:class:`InvokeTask`, :class:`StartTimer`), the history events of this step, and the
  :class:`Outcome` once the execution is over. ``advance`` never mutates the state it is given;
  the new state shares its unchanged parts with the old one, and actions and history events share
  values with the state, so callers treat all of them as read-only (serialising them is fine).
- Crash safety: the executor persists ``Step.state`` (and its actions) after every step; a reloaded
  state behaves exactly like the live one, and :func:`pending_actions` re-derives every action
  still outstanding (at-least-once delivery to the executor, which must tolerate re-runs).
- Idempotency: every action carries a token unique within the execution (e.g.
  ``root/Fan[3]/Work#12@2``: frame, state, entry number, attempt). An event whose token is not
  outstanding (a duplicate, or the result of abandoned work such as the other branches of a failed
  Parallel) returns the same state with no actions and no history.
- Bounds: payloads (execution input, task input and output, state output, a Parallel/Map's result)
  are limited to 256 KiB (States.DataLimitExceeded, like AWS); an execution has at most 25,000
  history events, past which it fails with States.Runtime; errors are clipped to 256 characters
  and causes to 32,768.

Error policy (the spec's names, AWS's catchability):
- States.Runtime (InputPath/OutputPath/ItemsPath/Variable/...Path finding nothing, a task output
  that is not JSON, ...) and States.DataLimitExceeded are terminal: they fail the execution
  outright, past every Retry and Catch, as on AWS.
- States.ParameterPathFailure (a ``.$`` path in Parameters/ResultSelector/ItemSelector finding
  nothing), States.IntrinsicFailure and States.ResultPathMatchFailure are state errors: a Task,
  Parallel or Map state's Catch sees them, but Retry does not (re-running cannot change a
  deterministic data-flow failure).
- States.NoChoiceMatched fails the Choice's frame; inside a Parallel/Map that is a branch failure.
- Matching: States.ALL matches everything (terminal errors aside); States.TaskFailed matches every
  error but States.Timeout and States.HeartbeatTimeout; States.Timeout also matches
  States.HeartbeatTimeout. A failed Parallel/Map reports the failing branch's own error (as AWS
  does); a Map with a failure tolerance reports States.ExceedToleratedFailureThreshold.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from control_plane.workflows.asl import (
    ERROR_ALL,
    ERROR_DATA_LIMIT,
    ERROR_HEARTBEAT_TIMEOUT,
    ERROR_INTRINSIC,
    ERROR_NO_CHOICE,
    ERROR_PARAMETER_PATH,
    ERROR_RESULT_PATH,
    ERROR_RUNTIME,
    ERROR_TASK_FAILED,
    ERROR_TIMEOUT,
    ERROR_TOLERATED_FAILURE,
    MAX_INT_FIELD,
    ChoiceState,
    FailState,
    Machine,
    MapState,
    ParallelState,
    PassState,
    Retrier,
    Rule,
    State,
    TaskState,
    TCall,
    Template,
    TObject,
    TPath,
    TStatic,
    WaitState,
    parse_timestamp,
    timestamp_seconds,
)
from control_plane.workflows.intrinsics import Call, IntrinsicError, evaluate
from control_plane.workflows.jsonpath import Path, PathNotFound, put

__all__ = [
    "Action",
    "Event",
    "ExecutionInfo",
    "HistoryEvent",
    "InvokeTask",
    "Outcome",
    "StartTimer",
    "Step",
    "TaskFailed",
    "TaskSucceeded",
    "TimerFired",
    "advance",
    "pending_actions",
    "start",
]

MAX_PAYLOAD_BYTES = 262_144
MAX_HISTORY_EVENTS = 25_000
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32_768
STATE_VERSION = 1
TIMEOUT_TOKEN = "execution:timeout"

RUNNING, SUCCEEDED, FAILED = "RUNNING", "SUCCEEDED", "FAILED"
_TERMINAL_ERRORS = frozenset({ERROR_RUNTIME, ERROR_DATA_LIMIT})


# --- the public types ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """Who this execution is; surfaces as ``$$.Execution`` and ``$$.StateMachine``."""

    id: str
    name: str
    state_machine_id: str = ""
    state_machine_name: str = ""


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    token: str
    output: Any = None


@dataclass(frozen=True, slots=True)
class TaskFailed:
    token: str
    error: str
    cause: str = ""


@dataclass(frozen=True, slots=True)
class TimerFired:
    token: str


Event = TaskSucceeded | TaskFailed | TimerFired


@dataclass(frozen=True, slots=True)
class InvokeTask:
    """Run ``resource`` (the Task's Resource string) on ``input``; report TaskSucceeded/TaskFailed.
    With ``timeout_s``, the executor reports TaskFailed(error="States.Timeout") when it elapses."""

    token: str
    resource: str
    input: Any
    timeout_s: float | None = None
    heartbeat_s: None = None


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Report TimerFired(token) at (or after) the absolute time ``fire_at``."""

    token: str
    fire_at: float


Action = InvokeTask | StartTimer


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Literal["SUCCEEDED", "FAILED"]
    output: Any = None
    error: str | None = None
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    type: str
    state_name: str | None
    timestamp: float
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    state: dict[str, Any]
    actions: list[Action]
    history: list[HistoryEvent]
    done: Outcome | None


# --- internal control flow -----------------------------------------------------------------------


class _Fault(Exception):
    """A state error: goes through the state's Retry (if ``retryable``) and Catch."""

    def __init__(self, error: str, cause: str, *, retryable: bool = False) -> None:
        super().__init__(error, cause)
        self.error, self.cause, self.retryable = error, cause, retryable


class _Terminal(Exception):
    """An error that fails the whole execution, past every Retry and Catch."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error, cause)
        self.error, self.cause = error, cause


class _HistoryFull(Exception):
    pass


Frame = dict[str, Any]
FramePath = list[str]


class _Run:
    """The mutable context of one start/advance call."""

    __slots__ = ("actions", "history", "m", "now", "s")

    def __init__(self, machine: Machine, state: dict[str, Any], now: float) -> None:
        self.m, self.s, self.now = machine, state, now
        self.actions: list[Action] = []
        self.history: list[HistoryEvent] = []

    def emit(self, kind: str, state_name: str | None, frame: Frame | None, details: dict[str, Any],
             *, force: bool = False) -> None:
        if not force and self.s["events"] >= MAX_HISTORY_EVENTS:
            raise _HistoryFull
        self.s["events"] += 1
        if frame is not None and frame["id"] != "root":
            details = {**details, "scope": frame["id"]}
        self.history.append(HistoryEvent(kind, state_name, self.now, details))

    def seq(self) -> int:
        self.s["seq"] += 1
        return int(self.s["seq"])

    def seed(self, site: str) -> bytes:
        return hashlib.sha256(f"{self.s['execution']['id']}\x00{site}".encode()).digest()

    def step(self) -> Step:
        pending = self.s["pending"]
        actions = [a for a in self.actions if a.token in pending]
        return Step(state=self.s, actions=actions, history=self.history, done=_outcome(self.s))


class _Scope:
    """Data for ``$`` paths plus a lazily built Context Object for ``$$`` paths."""

    __slots__ = ("_ctx", "_make", "data")

    def __init__(self, data: Any, make: Callable[[], dict[str, Any]]) -> None:
        self.data, self._make = data, make
        self._ctx: dict[str, Any] | None = None

    def get(self, path: Path) -> Any:
        if path.context:
            if self._ctx is None:
                self._ctx = self._make()
            return path.find(self._ctx)
        return path.find(self.data)


# --- the public functions ------------------------------------------------------------------------


def start(machine: Machine, input: Any, *, execution: ExecutionInfo, now: float) -> Step:
    """Begin an execution of ``machine`` on ``input`` (a JSON value) at time ``now``."""
    try:
        data = _normalize(input)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"the execution input is not JSON: {e}") from None
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "execution": {
            "id": execution.id, "name": execution.name, "state_machine_id": execution.state_machine_id,
            "state_machine_name": execution.state_machine_name, "input": data, "start_time": now,
        },
        "status": RUNNING,
        "outcome": None,
        "seq": 0,
        "events": 0,
        "pending": {},
        "root": _new_frame("root"),
    }
    rt = _Run(machine, state, now)
    try:
        rt.emit("ExecutionStarted", None, None, {"input": data, "execution_id": execution.id,
                                                 "name": execution.name})
        _check_size(data, "the execution input")
        if machine.timeout_s is not None:
            fire_at = now + machine.timeout_s
            state["pending"][TIMEOUT_TOKEN] = {"path": [], "kind": "timeout", "fire_at": fire_at}
            rt.actions.append(StartTimer(TIMEOUT_TOKEN, float(fire_at)))
        _enter(rt, state["root"], machine.root.start_at, data)
        _run_frame(rt, state["root"], [])
    except _Terminal as t:
        _fail_execution(rt, t.error, t.cause)
    except _HistoryFull:
        _fail_execution(rt, ERROR_RUNTIME, _history_cause())
    _settle(rt)
    return rt.step()


def advance(machine: Machine, state: dict[str, Any], event: Event, *, now: float) -> Step:
    """Feed one event to an execution; ``state`` is left untouched (the Step has the new one)."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unknown execution state version {state.get('version')!r}")
    if state["status"] != RUNNING:
        return Step(state=state, actions=[], history=[], done=_outcome(state))
    entry = state["pending"].get(event.token)
    if entry is None or not _fits(entry["kind"], event):
        return Step(state=state, actions=[], history=[], done=None)
    s, chain = _thaw(state, entry["path"])
    rt = _Run(machine, s, now)
    del s["pending"][event.token]
    try:
        if entry["kind"] == "timeout":
            _fail_execution(rt, ERROR_TIMEOUT, f"the execution ran longer than TimeoutSeconds "
                            f"({machine.timeout_s})")
        else:
            frame, path = chain[-1]
            st = machine.states[frame["state"]]
            _deliver(rt, frame, path, st, entry["kind"], event)
            _run_frame(rt, frame, path)
            _propagate(rt, chain)
    except _Terminal as t:
        _fail_execution(rt, t.error, t.cause)
    except _HistoryFull:
        _fail_execution(rt, ERROR_RUNTIME, _history_cause())
    _settle(rt)
    return rt.step()


def pending_actions(machine: Machine, state: dict[str, Any]) -> list[Action]:
    """Every action still outstanding in ``state`` (to re-issue after a crash), in token order."""
    if state.get("status") != RUNNING:
        return []
    out: list[Action] = []
    for token, entry in sorted(state["pending"].items()):
        if entry["kind"] == "task":
            frame, _ = _chain(state["root"], entry["path"])[-1]
            st = machine.states[frame["state"]]
            assert isinstance(st, TaskState)
            run = frame["run"]
            out.append(InvokeTask(token, st.resource, run["eff"], run["timeout"]))
        else:
            out.append(StartTimer(token, float(entry["fire_at"])))
    return out


# --- helpers -------------------------------------------------------------------------------------


def _history_cause() -> str:
    return f"the execution exceeded {MAX_HISTORY_EVENTS} history events"


def _fits(kind: str, event: Event) -> bool:
    if kind == "task":
        return isinstance(event, (TaskSucceeded, TaskFailed))
    return isinstance(event, TimerFired)


def _outcome(state: dict[str, Any]) -> Outcome | None:
    o = state.get("outcome")
    if o is None:
        return None
    return Outcome(status=o["status"], output=o.get("output"), error=o.get("error"), cause=o.get("cause"))


def _new_frame(fid: str) -> Frame:
    return {"id": fid, "state": None, "input": None, "entered": 0.0, "visit": 0, "status": RUNNING,
            "run": None}


def _chain(root: Frame, path: list[str]) -> list[tuple[Frame, FramePath]]:
    chain: list[tuple[Frame, FramePath]] = [(root, [])]
    frame = root
    try:
        for i, key in enumerate(path):
            frame = frame["run"]["children"][key]
            chain.append((frame, list(path[: i + 1])))
    except (KeyError, TypeError):
        raise ValueError("the execution state is inconsistent: a pending token names no frame") from None
    return chain


def _thaw(state: dict[str, Any], path: list[str]) -> tuple[dict[str, Any], list[tuple[Frame, FramePath]]]:
    """A copy of ``state`` that an event along ``path`` may mutate, and the chain of its frames.

    Copy-on-write: an event only ever mutates the state's top level, its pending table and the
    frames from the root down to the event's frame (their run records, children tables, result
    and retry-count lists); JSON values are never mutated. So only that spine is copied, and the
    new state shares everything else with the old one (which stays untouched).
    """
    s = dict(state)
    s["pending"] = dict(state["pending"])
    frame = s["root"] = _thaw_frame(state["root"])
    chain: list[tuple[Frame, FramePath]] = [(frame, [])]
    try:
        for i, key in enumerate(path):
            children = frame["run"]["children"]
            frame = children[key] = _thaw_frame(children[key])
            chain.append((frame, list(path[: i + 1])))
    except (KeyError, TypeError):
        raise ValueError("the execution state is inconsistent: a pending token names no frame") from None
    return s, chain


def _thaw_frame(frame: Frame) -> Frame:
    copy_ = dict(frame)
    run = frame.get("run")
    if run is not None:
        run = copy_["run"] = dict(run)
        for key in ("children", "retries", "results"):
            if key in run:
                run[key] = type(run[key])(run[key])
    return copy_


def _normalize(value: Any) -> Any:
    """A plain-JSON copy of ``value`` (tuples become lists; NaN, sets, objects are refused)."""
    return json.loads(json.dumps(value, allow_nan=False))


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _check_size(value: Any, what: str) -> None:
    size = _size(value)
    if size > MAX_PAYLOAD_BYTES:
        raise _Terminal(ERROR_DATA_LIMIT, f"{what} is {size} bytes, more than the {MAX_PAYLOAD_BYTES} "
                        "allowed")


def _fresh(value: Any) -> Any:
    """A copy of a definition constant, so no caller can mutate the Machine through a result."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def _iso(t: float) -> str:
    ms = math.floor(t * 1000)
    seconds, millis = divmod(ms, 1000)
    moment = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def _clip(error: str | None, cause: str | None) -> tuple[str | None, str]:
    return (None if error is None else error[:MAX_ERROR_CHARS]), (cause or "")[:MAX_CAUSE_CHARS]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _site(frame: Frame, st: State) -> str:
    return f"{frame['id']}/{st.name}#{frame['visit']}"


def _context(rt: _Run, frame: Frame, st: State, item: tuple[int, Any] | None = None) -> dict[str, Any]:
    ex = rt.s["execution"]
    run = frame["run"] or {}
    ctx: dict[str, Any] = {
        "Execution": {"Id": ex["id"], "Input": ex["input"], "Name": ex["name"],
                      "StartTime": _iso(ex["start_time"])},
        "StateMachine": {"Id": ex["state_machine_id"], "Name": ex["state_machine_name"]},
        "State": {"Name": st.name, "EnteredTime": _iso(frame["entered"]),
                  "RetryCount": run.get("retry_count", 0)},
    }
    if item is not None:
        ctx["Map"] = {"Item": {"Index": item[0], "Value": item[1]}}
    return ctx


def _scope(rt: _Run, frame: Frame, st: State, data: Any, item: tuple[int, Any] | None = None) -> _Scope:
    return _Scope(data, lambda: _context(rt, frame, st, item))


def _select(scope: _Scope, path: Path | None, field: str, st: State) -> Any:
    """InputPath/OutputPath-style selection: null gives {}; a path finding nothing is States.Runtime."""
    if path is None:
        return {}
    if path.is_root and not path.context:
        return scope.data
    try:
        return scope.get(path)
    except PathNotFound as e:
        raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: {field} {path.text!r} could not be applied: {e}"
                        ) from None


def _render(rt: _Run, template: Template, scope: _Scope, site: str, field: str) -> Any:
    """Evaluate a payload template (Parameters, ResultSelector, ItemSelector)."""
    calls = [0]

    def seed() -> bytes:
        calls[0] += 1
        return rt.seed(f"{site}/{field}/{calls[0]}")

    def walk(node: Template) -> Any:
        if isinstance(node, TStatic):
            return _fresh(node.value)
        if isinstance(node, TPath):
            try:
                return scope.get(node.path)
            except PathNotFound as e:
                raise _Fault(ERROR_PARAMETER_PATH, f"{field}: the path {node.path.text!r} could not be "
                             f"applied: {e}") from None
        if isinstance(node, TCall):
            try:
                return evaluate(node.call, scope.get, seed)
            except IntrinsicError as e:
                raise _Fault(ERROR_INTRINSIC, f"{field}: {node.text}: {e}") from None
        if isinstance(node, TObject):
            return {k: walk(v) for k, v in node.items}
        return [walk(v) for v in node.items]

    return walk(template)


def _place(raw: Any, result_path: Path | None, result: Any) -> Any:
    """ResultPath: null keeps the raw input; otherwise the result is written into it."""
    if result_path is None:
        return raw
    assert result_path.steps is not None
    try:
        return put(raw, result_path.steps, result)
    except PathNotFound as e:
        raise _Fault(ERROR_RESULT_PATH, f"ResultPath {result_path.text!r} cannot be applied: {e}") from None


def _matches(names: tuple[str, ...], error: str | None) -> bool:
    err = error or ""
    for name in names:
        if name in (err, ERROR_ALL):
            return True
        if name == ERROR_TASK_FAILED and err not in (ERROR_TIMEOUT, ERROR_HEARTBEAT_TIMEOUT):
            return True
        if name == ERROR_TIMEOUT and err == ERROR_HEARTBEAT_TIMEOUT:
            return True
    return False


def _unit(rt: _Run, site: str) -> float:
    """A deterministic number in [0, 1) for ``site``."""
    return int.from_bytes(rt.seed(site)[:8], "big") / 2**64


def _retry_delay(rt: _Run, r: Retrier, n: int, token: str) -> float:
    try:
        delay = r.interval_s * r.backoff_rate**n
    except OverflowError:
        delay = math.inf
    if r.max_delay_s is not None:
        delay = min(delay, r.max_delay_s)
    delay = min(delay, float(MAX_INT_FIELD))
    if r.jitter == "FULL":
        delay *= _unit(rt, token)
    return delay


# --- frames and transitions ----------------------------------------------------------------------


def _enter(rt: _Run, frame: Frame, name: str, data: Any) -> None:
    st = rt.m.states[name]
    frame.update(state=name, input=data, entered=rt.now, visit=rt.seq(), run=None)
    rt.emit(f"{st.type}StateEntered", name, frame, {"input": data})


def _exit(rt: _Run, frame: Frame, st: State, output: Any, next_name: str | None) -> None:
    _check_size(output, f"the output of state {st.name!r}")
    rt.emit(f"{st.type}StateExited", st.name, frame, {"output": output})
    if next_name is not None:
        _enter(rt, frame, next_name, output)
    else:
        frame.update(status=SUCCEEDED, output=output, state=None, run=None)


def _frame_failed(frame: Frame, error: str | None, cause: str) -> None:
    frame.update(status=FAILED, error=error, cause=cause, run=None)


def _run_frame(rt: _Run, frame: Frame, path: FramePath) -> None:
    """Run a frame's states until it blocks (waits on a task, timer or children) or ends."""
    while frame["status"] == RUNNING and frame["run"] is None:
        st = rt.m.states[frame["state"]]
        run = frame["run"] = {}
        try:
            _STARTERS[st.type](rt, frame, path, st)
        except _Fault as f:
            if frame["run"] is not run:  # pragma: no cover - a starter faulted after leaving its state
                raise
            _fail_state(rt, frame, path, st, f.error, f.cause, f.retryable)


def _fail_state(rt: _Run, frame: Frame, path: FramePath, st: State, error: str | None, cause: str,
                retryable: bool) -> None:
    """A state reported an error: Retry, else Catch, else the frame fails."""
    error, cause = _clip(error, cause)
    if error in _TERMINAL_ERRORS:
        raise _Terminal(error or "", cause)
    run = frame["run"]
    retriers: tuple[Retrier, ...] = getattr(st, "retry", ())
    if retryable and retriers:
        for i, r in enumerate(retriers):
            if _matches(r.error_equals, error):
                counts = run.setdefault("retries", [0] * len(retriers))
                if counts[i] < r.max_attempts:
                    _schedule_retry(rt, frame, path, st, r, i, error, cause)
                    return
                break  # the first matching retrier decides; exhausted, it hands over to Catch
    for c in getattr(st, "catch", ()):
        if _matches(c.error_equals, error):
            try:
                out = _place(frame["input"], c.result_path, {"Error": error, "Cause": cause})
            except _Fault as f:
                error, cause = f.error, f.cause
                break
            rt.emit("CatchTriggered", st.name, frame, {"error": error, "cause": cause, "next": c.next})
            _abandon(rt, path)
            _exit(rt, frame, st, out, c.next)
            return
    _abandon(rt, path)
    _frame_failed(frame, error, cause)


def _schedule_retry(rt: _Run, frame: Frame, path: FramePath, st: State, r: Retrier, index: int,
                    error: str | None, cause: str) -> None:
    run = frame["run"]
    n = run["retries"][index]
    run["retries"][index] = n + 1
    run["retry_count"] = run.get("retry_count", 0) + 1
    token = f"{_site(frame, st)}:retry{run['retry_count']}"
    delay = _retry_delay(rt, r, n, token)
    fire_at = rt.now + delay
    _abandon(rt, path)
    run.pop("children", None)
    run.update(phase="retry", token=token)
    rt.s["pending"][token] = {"path": list(path), "kind": "retry", "fire_at": fire_at}
    rt.actions.append(StartTimer(token, float(fire_at)))
    rt.emit("RetryScheduled", st.name, frame, {"error": error, "cause": cause, "retry": run["retry_count"],
                                               "delay_s": delay, "fire_at": fire_at, "token": token})


def _abandon(rt: _Run, path: FramePath) -> None:
    """Forget the outstanding work of every frame below ``path`` (its results will be ignored)."""
    n = len(path)
    pending = rt.s["pending"]
    for token in [t for t, e in pending.items() if len(e["path"]) > n and e["path"][:n] == path]:
        del pending[token]


def _finish(rt: _Run, frame: Frame, path: FramePath, st: State, result: Any) -> None:
    """ResultSelector, ResultPath, OutputPath, then leave the state."""
    try:
        selector: Template | None = getattr(st, "result_selector", None)
        if selector is not None:
            result = _render(rt, selector, _scope(rt, frame, st, result), _site(frame, st), "ResultSelector")
        out = _place(frame["input"], getattr(st, "result_path", None), result)
    except _Fault as f:
        _fail_state(rt, frame, path, st, f.error, f.cause, retryable=False)
        return
    out = _select(_scope(rt, frame, st, out), st.output_path, "OutputPath", st)
    _exit(rt, frame, st, out, st.next)


def _settle(rt: _Run) -> None:
    """Close the execution once its top-level frame has ended."""
    root = rt.s["root"]
    if rt.s["status"] != RUNNING or root["status"] == RUNNING:
        return
    if root["status"] == SUCCEEDED:
        rt.emit("ExecutionSucceeded", None, None, {"output": root["output"]}, force=True)
        _complete(rt, {"status": SUCCEEDED, "output": root["output"], "error": None, "cause": None})
    else:
        rt.emit("ExecutionFailed", None, None, {"error": root["error"], "cause": root["cause"] or None},
                force=True)
        _complete(rt, {"status": FAILED, "output": None, "error": root["error"],
                       "cause": root["cause"] or None})


def _fail_execution(rt: _Run, error: str, cause: str) -> None:
    error_c, cause_c = _clip(error, cause)
    rt.emit("ExecutionFailed", None, None, {"error": error_c, "cause": cause_c or None}, force=True)
    _complete(rt, {"status": FAILED, "output": None, "error": error_c, "cause": cause_c or None})


def _complete(rt: _Run, outcome: dict[str, Any]) -> None:
    rt.s.update(status=outcome["status"], outcome=outcome, pending={})


# --- event delivery ------------------------------------------------------------------------------


def _deliver(rt: _Run, frame: Frame, path: FramePath, st: State, kind: str, event: Event) -> None:
    try:
        if kind == "task":
            assert isinstance(st, TaskState)
            if isinstance(event, TaskSucceeded):
                _task_succeeded(rt, frame, path, st, event)
            elif isinstance(event, TaskFailed):
                _task_failed(rt, frame, path, st, event)
        elif kind == "wait":
            assert isinstance(st, WaitState)
            _wait_done(rt, frame, st)
        elif kind == "retry":
            frame["run"]["phase"] = "retrying"
            if isinstance(st, TaskState):
                _invoke(rt, frame, path, st)
            elif isinstance(st, ParallelState):
                _parallel_spawn(rt, frame, path, st)
            elif isinstance(st, MapState):
                _map_spawn(rt, frame, path, st)
    except _Fault as f:
        _fail_state(rt, frame, path, st, f.error, f.cause, f.retryable)


def _propagate(rt: _Run, chain: list[tuple[Frame, FramePath]]) -> None:
    """After an event: let each ended frame's parent react, from the leaf up."""
    for depth in range(len(chain) - 1, 0, -1):
        child, child_path = chain[depth]
        if child["status"] == RUNNING:
            return
        parent, parent_path = chain[depth - 1]
        st = rt.m.states[parent["state"]]
        key = child_path[-1]
        run = parent["run"]
        if run is None or run.get("phase") != "children" or key not in run.get("children", {}):
            return  # pragma: no cover - the parent moved on; nothing to report to
        if isinstance(st, ParallelState):
            _parallel_child_done(rt, parent, parent_path, st, key)
        elif isinstance(st, MapState):
            _map_child_done(rt, parent, parent_path, st, key)
            _map_pump(rt, parent, parent_path, st)
        _run_frame(rt, parent, parent_path)


# --- Task ----------------------------------------------------------------------------------------


def _start_task(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, TaskState)
    frame["run"]["attempt"] = 0
    _invoke(rt, frame, path, st)


def _invoke(rt: _Run, frame: Frame, path: FramePath, st: TaskState) -> None:
    """Schedule one attempt. The input is processed afresh for each attempt (so
    ``$$.State.RetryCount`` in Parameters counts the retries, as on AWS)."""
    run = frame["run"]
    run["attempt"] += 1
    token = f"{_site(frame, st)}@{run['attempt']}"
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    timeout: int | None = st.timeout_s
    if st.timeout_path is not None:
        value = _select(_scope(rt, frame, st, data), st.timeout_path, "TimeoutSecondsPath", st)
        if not _is_int(value) or not 0 < value <= MAX_INT_FIELD:
            raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: TimeoutSecondsPath {st.timeout_path.text!r} "
                            f"must select a positive integer, got {value!r}")
        timeout = int(value)
    if st.parameters is not None:
        data = _render(rt, st.parameters, _scope(rt, frame, st, data), token, "Parameters")
    _check_size(data, f"the input to task {st.name!r}")
    run.update(phase="task", token=token, eff=data, timeout=None if timeout is None else float(timeout))
    rt.s["pending"][token] = {"path": list(path), "kind": "task"}
    rt.actions.append(InvokeTask(token, st.resource, data, run["timeout"]))
    rt.emit("TaskScheduled", st.name, frame, {"resource": st.resource, "input": data,
                                              "timeout_s": run["timeout"], "token": token,
                                              "attempt": run["attempt"]})


def _task_succeeded(rt: _Run, frame: Frame, path: FramePath, st: TaskState, event: TaskSucceeded) -> None:
    try:
        output = _normalize(event.output)
    except (TypeError, ValueError, RecursionError) as e:
        raise _Terminal(ERROR_RUNTIME, f"task {st.name!r} returned a value that is not JSON: {e}") from None
    rt.emit("TaskSucceeded", st.name, frame, {"output": output, "token": event.token})
    _check_size(output, f"the output of task {st.name!r}")
    _finish(rt, frame, path, st, output)


def _task_failed(rt: _Run, frame: Frame, path: FramePath, st: TaskState, event: TaskFailed) -> None:
    error, cause = _clip(event.error or ERROR_TASK_FAILED, event.cause)
    kind = "TaskTimedOut" if error == ERROR_TIMEOUT else "TaskFailed"
    rt.emit(kind, st.name, frame, {"error": error, "cause": cause, "token": event.token})
    _fail_state(rt, frame, path, st, error, cause, retryable=True)


# --- Pass, Succeed, Fail, Choice, Wait -----------------------------------------------------------


def _start_pass(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, PassState)
    if st.has_result:
        result = _fresh(st.result)
    else:
        result = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
        if st.parameters is not None:
            result = _render(rt, st.parameters, _scope(rt, frame, st, result), _site(frame, st), "Parameters")
    _finish(rt, frame, path, st, result)


def _start_succeed(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    out = _select(_scope(rt, frame, st, data), st.output_path, "OutputPath", st)
    _exit(rt, frame, st, out, None)


def _start_fail(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, FailState)
    error = _fail_field(rt, frame, st, st.error, st.error_path, "ErrorPath")
    cause = _fail_field(rt, frame, st, st.cause, st.cause_path, "CausePath")
    error, cause_c = _clip(error, cause)
    _frame_failed(frame, error, cause_c)


def _fail_field(rt: _Run, frame: Frame, st: State, literal: str | None, source: Path | Call | None,
                field: str) -> str | None:
    if source is None:
        return literal
    scope = _scope(rt, frame, st, frame["input"])
    if isinstance(source, Path):
        value = _select(scope, source, field, st)
    else:
        try:
            value = evaluate(source, scope.get, lambda: rt.seed(f"{_site(frame, st)}/{field}"))
        except IntrinsicError as e:
            raise _Fault(ERROR_INTRINSIC, f"{field}: {e}") from None
    if not isinstance(value, str):
        raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: {field} must give a string, got {value!r}")
    return value


def _start_choice(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, ChoiceState)
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    scope = _scope(rt, frame, st, data)
    chosen = next((r.next for r in st.choices if _test(r, scope, st)), st.default)
    if chosen is None:
        raise _Fault(ERROR_NO_CHOICE, f"no choice rule of state {st.name!r} matched, and it has no Default")
    out = _select(scope, st.output_path, "OutputPath", st)
    _exit(rt, frame, st, out, chosen)


def _test(rule: Rule, scope: _Scope, st: State) -> bool:
    if rule.op == "And":
        return all(_test(r, scope, st) for r in rule.rules)
    if rule.op == "Or":
        return any(_test(r, scope, st) for r in rule.rules)
    if rule.op == "Not":
        return not _test(rule.rules[0], scope, st)
    assert rule.variable is not None
    try:
        value = scope.get(rule.variable)
    except PathNotFound:
        if rule.op == "IsPresent":
            return rule.value is False
        raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: the choice rule's Variable "
                        f"{rule.variable.text!r} selects nothing") from None
    if rule.op == "IsPresent":
        return rule.value is True
    other = rule.value
    if rule.value_path is not None:
        try:
            other = scope.get(rule.value_path)
        except PathNotFound:
            raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: the choice rule's {rule.op}Path "
                            f"{rule.value_path.text!r} selects nothing") from None
        if rule.op.startswith("Timestamp"):
            other = parse_timestamp(other)
            if other is None:
                return False
    return _compare(rule.op, value, other)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: bool(a == b),
    "LessThan": lambda a, b: bool(a < b),
    "GreaterThan": lambda a, b: bool(a > b),
    "LessThanEquals": lambda a, b: bool(a <= b),
    "GreaterThanEquals": lambda a, b: bool(a >= b),
}


def _compare(op: str, value: Any, other: Any) -> bool:
    if op == "StringMatches":
        return isinstance(value, str) and other.fullmatch(value) is not None
    if op.startswith("String"):
        return isinstance(value, str) and isinstance(other, str) and _ORDER[op[6:]](value, other)
    if op.startswith("Numeric"):
        return _is_number(value) and _is_number(other) and _ORDER[op[7:]](value, other)
    if op == "BooleanEquals":
        return isinstance(value, bool) and isinstance(other, bool) and value == other
    if op.startswith("Timestamp"):
        key = parse_timestamp(value)
        return key is not None and _ORDER[op[9:]](key, other)
    tests: dict[str, Callable[[Any], bool]] = {
        "IsNull": lambda v: v is None,
        "IsNumeric": _is_number,
        "IsString": lambda v: isinstance(v, str),
        "IsBoolean": lambda v: isinstance(v, bool),
        "IsTimestamp": lambda v: parse_timestamp(v) is not None,
    }
    return bool(tests[op](value) == other)


def _start_wait(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, WaitState)
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    if st.seconds is not None:
        fire_at = rt.now + st.seconds
    elif st.timestamp is not None:
        fire_at = st.timestamp
    elif st.seconds_path is not None:
        value = _select(_scope(rt, frame, st, data), st.seconds_path, "SecondsPath", st)
        if not _is_int(value) or not 0 <= value <= MAX_INT_FIELD:
            raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: SecondsPath {st.seconds_path.text!r} must "
                            f"select a non-negative integer, got {value!r}")
        fire_at = rt.now + value
    else:
        assert st.timestamp_path is not None
        value = _select(_scope(rt, frame, st, data), st.timestamp_path, "TimestampPath", st)
        key = parse_timestamp(value)
        if key is None:
            raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: TimestampPath {st.timestamp_path.text!r} "
                            f"must select an RFC 3339 timestamp, got {value!r}")
        fire_at = timestamp_seconds(key)
    if fire_at <= rt.now:
        _wait_done(rt, frame, st)
        return
    token = f"{_site(frame, st)}:wait"
    frame["run"].update(phase="wait", token=token)
    rt.s["pending"][token] = {"path": list(path), "kind": "wait", "fire_at": float(fire_at)}
    rt.actions.append(StartTimer(token, float(fire_at)))
    rt.emit("WaitScheduled", st.name, frame, {"fire_at": fire_at, "token": token})


def _wait_done(rt: _Run, frame: Frame, st: WaitState) -> None:
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    out = _select(_scope(rt, frame, st, data), st.output_path, "OutputPath", st)
    _exit(rt, frame, st, out, st.next)


# --- Parallel and Map ----------------------------------------------------------------------------


def _start_parallel(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, ParallelState)
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    if st.parameters is not None:
        data = _render(rt, st.parameters, _scope(rt, frame, st, data), _site(frame, st), "Parameters")
    _check_size(data, f"the input to state {st.name!r}")
    frame["run"]["eff"] = data
    rt.emit("ParallelStateStarted", st.name, frame, {"branches": len(st.branches)})
    _parallel_spawn(rt, frame, path, st)


def _parallel_spawn(rt: _Run, frame: Frame, path: FramePath, st: ParallelState) -> None:
    run = frame["run"]
    n = len(st.branches)
    run.update(phase="children", children={}, results=[None] * n, remaining=n, bytes=0)
    for i, graph in enumerate(st.branches):
        if frame["run"] is not run or run["phase"] != "children":
            return  # a branch already failed (or all ended) synchronously
        key = str(i)
        child = _new_frame(f"{frame['id']}/{st.name}[{i}]")
        run["children"][key] = child
        _enter(rt, child, graph.start_at, run["eff"])
        _run_frame(rt, child, [*path, key])
        if child["status"] != RUNNING:
            _parallel_child_done(rt, frame, path, st, key)


def _parallel_child_done(rt: _Run, frame: Frame, path: FramePath, st: ParallelState, key: str) -> None:
    run = frame["run"]
    child = run["children"].pop(key)
    if child["status"] == FAILED:
        _composite_failed(rt, frame, path, st, child["error"], child["cause"])
        return
    run["results"][int(key)] = child["output"]
    run["remaining"] -= 1
    _count_result(run, child["output"], st)
    if run["remaining"] == 0:
        rt.emit("ParallelStateSucceeded", st.name, frame, {})
        _finish(rt, frame, path, st, run["results"])


def _count_result(run: dict[str, Any], output: Any, st: State) -> None:
    """Fail early once a Parallel/Map's result is sure to exceed the payload limit."""
    run["bytes"] += _size(output) + 1
    if run["bytes"] > MAX_PAYLOAD_BYTES:
        raise _Terminal(ERROR_DATA_LIMIT, f"the result of state {st.name!r} is more than "
                        f"{MAX_PAYLOAD_BYTES} bytes")


def _composite_failed(rt: _Run, frame: Frame, path: FramePath, st: State, error: str | None,
                      cause: str) -> None:
    _abandon(rt, path)
    run = frame["run"]
    run.update(children={}, results=[])
    rt.emit(f"{st.type}StateFailed", st.name, frame, {"error": error, "cause": cause})
    _fail_state(rt, frame, path, st, error, cause, retryable=True)


def _start_map(rt: _Run, frame: Frame, path: FramePath, st: State) -> None:
    assert isinstance(st, MapState)
    data = _select(_scope(rt, frame, st, frame["input"]), st.input_path, "InputPath", st)
    scope = _scope(rt, frame, st, data)
    items = _select(scope, st.items_path, "ItemsPath", st)
    if not isinstance(items, list):
        raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: ItemsPath {st.items_path.text!r} must select an "
                        f"array, got a {type(items).__name__}")
    run = frame["run"]
    run.update(eff=data, n=len(items),
               max=_map_number(scope, st, st.max_concurrency, st.max_concurrency_path, "MaxConcurrencyPath"),
               tol_count=_map_number(scope, st, st.tolerated_count, st.tolerated_count_path,
                                     "ToleratedFailureCountPath"),
               tol_pct=_map_number(scope, st, st.tolerated_percentage, st.tolerated_percentage_path,
                                   "ToleratedFailurePercentagePath", percentage=True))
    rt.emit("MapStateStarted", st.name, frame, {"length": len(items)})
    _map_spawn(rt, frame, path, st)


def _map_number(scope: _Scope, st: MapState, literal: float | None, source: Path | None, field: str,
                *, percentage: bool = False) -> float | None:
    if source is None:
        return literal
    value = _select(scope, source, field, st)
    ok = (_is_number(value) and 0 <= value <= 100) if percentage else (_is_int(value) and value >= 0)
    if not ok:
        want = "a number from 0 to 100" if percentage else "a non-negative integer"
        raise _Terminal(ERROR_RUNTIME, f"state {st.name!r}: {field} {source.text!r} must select {want}, got "
                        f"{value!r}")
    return float(value) if percentage else int(value)


def _map_spawn(rt: _Run, frame: Frame, path: FramePath, st: MapState) -> None:
    run = frame["run"]
    run.update(phase="children", children={}, results=[None] * run["n"], next=0, done=0, failed=0, bytes=0)
    _map_pump(rt, frame, path, st)


def _map_pump(rt: _Run, frame: Frame, path: FramePath, st: MapState) -> None:
    """Start iterations while MaxConcurrency allows; finish the state once all have ended."""
    run = frame["run"]
    while run is not None and frame["run"] is run and run["phase"] == "children":
        if run["done"] == run["n"]:
            rt.emit("MapStateSucceeded", st.name, frame, {"length": run["n"]})
            _finish(rt, frame, path, st, run["results"])
            return
        if run["next"] >= run["n"] or (run["max"] and len(run["children"]) >= run["max"]):
            return  # blocked: every remaining iteration waits for a running one to end
        i = run["next"]
        run["next"] = i + 1
        scope = _scope(rt, frame, st, run["eff"])
        items = _select(scope, st.items_path, "ItemsPath", st)
        item = items[i]
        if st.item_selector is not None:
            try:
                item = _render(rt, st.item_selector, _scope(rt, frame, st, run["eff"], (i, item)),
                               _site(frame, st), f"ItemSelector[{i}]")
            except _Fault as f:
                _composite_failed(rt, frame, path, st, f.error, f.cause)
                return
        key = str(i)
        child = _new_frame(f"{frame['id']}/{st.name}[{i}]")
        run["children"][key] = child
        rt.emit("MapIterationStarted", st.name, frame, {"index": i})
        _enter(rt, child, st.processor.start_at, item)
        _run_frame(rt, child, [*path, key])
        if child["status"] != RUNNING:
            _map_child_done(rt, frame, path, st, key)


def _map_child_done(rt: _Run, frame: Frame, path: FramePath, st: MapState, key: str) -> None:
    run = frame["run"]
    child = run["children"].pop(key)
    i = int(key)
    run["done"] += 1
    if child["status"] == SUCCEEDED:
        run["results"][i] = child["output"]
        rt.emit("MapIterationSucceeded", st.name, frame, {"index": i})
        _count_result(run, child["output"], st)
        return
    run["failed"] += 1
    rt.emit("MapIterationFailed", st.name, frame, {"index": i, "error": child["error"],
                                                   "cause": child["cause"]})
    count, pct, failed = run["tol_count"], run["tol_pct"], run["failed"]
    if count is None and pct is None:
        error, cause = child["error"], child["cause"]
    elif (count is not None and failed > count) or (pct is not None and failed * 100 > pct * run["n"]):
        error = ERROR_TOLERATED_FAILURE
        cause = f"{run['failed']} of {run['n']} iterations failed, more than tolerated"
    else:
        failure = {"Error": child["error"], "Cause": child["cause"]}
        run["results"][i] = failure
        _count_result(run, failure, st)
        return
    for other in sorted(run["children"], key=int):
        rt.emit("MapIterationAborted", st.name, frame, {"index": int(other)})
    _composite_failed(rt, frame, path, st, error, cause)


_STARTERS: dict[str, Callable[[_Run, Frame, FramePath, State], None]] = {
    "Task": _start_task,
    "Pass": _start_pass,
    "Choice": _start_choice,
    "Wait": _start_wait,
    "Succeed": _start_succeed,
    "Fail": _start_fail,
    "Parallel": _start_parallel,
    "Map": _start_map,
}
