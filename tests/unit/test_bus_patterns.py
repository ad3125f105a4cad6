"""EventBridge event patterns and input transformers (control_plane.eventbus.patterns), table-driven.

Each operator has positive, negative and invalid cases; the events are EventBridge-shaped.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from control_plane.eventbus.patterns import (
    InvalidPattern,
    InvalidTransform,
    Pattern,
    compile_pattern,
    compile_transform,
    matches,
)

_DETAIL: dict[str, Any] = {
    "instance-id": "i-1234567890abcdef0",
    "state": "running",
    "c-count": 5,
    "d-count": 3,
    "x-limit": 301.8,
    "source-ip": "10.0.0.33",
    "spot": False,
    "owner": None,
    "eventVersion": "",
    "tags": ["prod", "web"],
    "FileName": "photos/Cat.PNG",
    "FilePath": "/usr/lib/python3/site.py",
    "service": "EventBridge",
    "placement": {"zone": "us-west-1a", "tenancy": "default"},
    "items": [{"sku": "A1", "qty": 1}, {"sku": "B2", "qty": 2}],
}


def event(detail: dict[str, Any] | None = None, *, drop: tuple[str, ...] = (), **top: Any) -> dict[str, Any]:
    """An EC2 state-change event: `detail` overrides detail fields, `drop` removes some, `top` others."""
    body = copy.deepcopy(_DETAIL)
    body.update(detail or {})
    for name in drop:
        body.pop(name, None)
    base: dict[str, Any] = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "111122223333",
        "time": "2017-12-22T18:43:48Z",
        "region": "us-west-1",
        "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
        "detail": body,
    }
    base.update(top)
    return base


EV = event()


def d(**fields: Any) -> dict[str, Any]:
    """A pattern on detail fields (underscores in names stand for dashes)."""
    return {"detail": {k.replace("_", "-"): v for k, v in fields.items()}}


def case(pattern: Any, ev: dict[str, Any], expected: bool, name: str) -> Any:
    return pytest.param(pattern, ev, expected, id=name)


EXACT = [
    case({"source": ["aws.ec2"]}, EV, True, "string-equal"),
    case({"source": ["aws.s3"]}, EV, False, "string-differs"),
    case({"source": ["aws.s3", "aws.ec2"]}, EV, True, "any-of-alternatives"),
    case({"source": ["AWS.EC2"]}, EV, False, "strings-are-case-sensitive"),
    case({"source": ["aws.ec2"], "region": ["us-west-1"]}, EV, True, "and-of-fields"),
    case({"source": ["aws.ec2"], "region": ["eu-west-1"]}, EV, False, "and-one-field-fails"),
    case(d(c_count=[5]), EV, True, "int-equals-int"),
    case(d(c_count=[5.0]), EV, True, "float-pattern-equals-int"),
    case(d(c_count=[5]), event({"c-count": 5.0}), True, "int-pattern-equals-float"),
    case(d(x_limit=[301.8]), EV, True, "float-equal"),
    case(d(c_count=["5"]), EV, False, "string-pattern-not-number"),
    case(d(c_count=[5]), event({"c-count": "5"}), False, "number-pattern-not-string"),
    case(d(spot=[False]), EV, True, "false-equals-false"),
    case(d(spot=[0]), EV, False, "zero-not-false"),
    case(d(spot=[True]), event({"spot": 1}), False, "true-not-one"),
    case(d(c_count=[1]), event({"c-count": True}), False, "one-not-true"),
    case(d(owner=[None]), EV, True, "null-equals-null"),
    case(d(owner=[None]), event(drop=("owner",)), False, "null-not-missing"),
    case(d(eventVersion=[""]), EV, True, "empty-string-equal"),
    case(d(eventVersion=[None]), EV, False, "null-not-empty-string"),
    case(d(owner=[""]), EV, False, "empty-string-not-null"),
    case({"account": ["111122223333"]}, EV, True, "account-as-string"),
    case({"account": [111122223333]}, EV, False, "account-number-not-string"),
    case(d(big=[123456789012]), event({"big": 123456789012}), True, "large-int-beyond-numeric-range"),
    case(d(missing=["x"]), EV, False, "missing-field"),
    case(d(placement=["us-west-1a"]), EV, False, "leaf-pattern-on-object"),
    case({"detail-type": ["EC2 Instance State-change Notification"]}, EV, True, "detail-type"),
]

ARRAYS = [
    case({"resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"]}, EV, True,
         "resources-element"),
    case({"resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-0"]}, EV, False, "resources-none"),
    case(d(tags=["web"]), EV, True, "any-element-matches"),
    case(d(tags=["dev", "qa"]), EV, False, "no-element-matches"),
    case(d(tags=["b"]), event({"tags": [["a"], ["b", ["c"]]]}), True, "nested-arrays-flattened"),
    case(d(tags=["a"]), event({"tags": []}), False, "empty-array-matches-nothing"),
    case(d(items={"sku": ["B2"]}), EV, True, "array-of-objects-crushed"),
    case(d(items={"sku": ["C3"]}), EV, False, "array-of-objects-no-element"),
    case(d(items={"sku": ["B2"], "qty": [2]}), EV, True, "array-consistent-same-element"),
    case(d(items={"sku": ["A1"], "qty": [2]}), EV, False, "array-consistent-different-elements"),
    case(d(items={"sku": ["A1"]}), event({"items": [[{"sku": "A1"}]]}), True, "nested-array-of-objects"),
    case(d(items={"sku": ["A1"]}), event({"items": ["A1"]}), False, "array-of-strings-is-not-objects"),
]

NESTED = [
    case(d(state=["running"]), EV, True, "detail-field"),
    case(d(state=["stopped"]), EV, False, "detail-field-differs"),
    case(d(placement={"zone": ["us-west-1a"]}), EV, True, "two-levels"),
    case(d(placement={"zone": ["us-east-1a"]}), EV, False, "two-levels-differs"),
    case(d(state={"name": ["running"]}), EV, False, "object-pattern-on-scalar"),
    case(d(placement={"zone": ["us-west-1a"]}), event(drop=("placement",)), False, "object-missing"),
    case({"detail": {"a": {"b": {"c": {"d": [1]}}}}}, event({"a": {"b": {"c": {"d": 1}}}}), True, "deep"),
]

PREFIX = [
    case({"time": [{"prefix": "2017-12-22"}]}, EV, True, "prefix"),
    case({"time": [{"prefix": "2017-10-02"}]}, EV, False, "prefix-differs"),
    case(d(c_count=[{"prefix": "5"}]), EV, False, "prefix-not-on-numbers"),
    case(d(eventVersion=[{"prefix": ""}]), EV, True, "empty-prefix-any-string"),
    case(d(owner=[{"prefix": ""}]), EV, False, "empty-prefix-not-null"),
    case({"region": [{"prefix": "eu-"}, {"prefix": "us-"}]}, EV, True, "prefix-alternatives"),
    case(d(tags=[{"prefix": "we"}]), EV, True, "prefix-in-array"),
    case(d(service=[{"prefix": {"equals-ignore-case": "eventb"}}]), EV, True, "prefix-ignore-case"),
    case(d(service=[{"prefix": {"equals-ignore-case": "bridge"}}]), EV, False, "prefix-ignore-case-differs"),
    case(d(service=[{"prefix": "eventb"}]), EV, False, "prefix-is-case-sensitive"),
]

SUFFIX = [
    case(d(FileName=[{"suffix": ".PNG"}]), EV, True, "suffix"),
    case(d(FileName=[{"suffix": ".png"}]), EV, False, "suffix-case-sensitive"),
    case(d(FileName=[{"suffix": {"equals-ignore-case": ".png"}}]), EV, True, "suffix-ignore-case"),
    case(d(FileName=[{"suffix": {"equals-ignore-case": ".jpg"}}]), EV, False, "suffix-ignore-case-differs"),
    case({"source": [{"suffix": "ec2"}]}, EV, True, "suffix-source"),
    case(d(d_count=[{"suffix": "3"}]), EV, False, "suffix-not-on-numbers"),
]

IGNORE_CASE = [
    case({"source": [{"equals-ignore-case": "AWS.EC2"}]}, EV, True, "equals-ignore-case"),
    case({"source": [{"equals-ignore-case": "aws.ec"}]}, EV, False, "equals-ignore-case-is-whole-value"),
    case(d(spot=[{"equals-ignore-case": "false"}]), EV, False, "equals-ignore-case-not-bool"),
    case(d(name=[{"equals-ignore-case": "ÄRGER"}]), event({"name": "ärger"}), True, "ignore-case-unicode"),
]

WILDCARD = [
    case(d(FilePath=[{"wildcard": "*/lib/*"}]), EV, True, "wildcard-contains"),
    case(d(FilePath=[{"wildcard": "*/bin/*"}]), EV, False, "wildcard-no-match"),
    case(d(FilePath=[{"wildcard": "/usr/*.py"}]), EV, True, "wildcard-prefix-and-suffix"),
    case(d(FilePath=[{"wildcard": "/usr/*.sh"}]), EV, False, "wildcard-suffix-differs"),
    case(d(FilePath=[{"wildcard": "*"}]), EV, True, "wildcard-star-any-string"),
    case(d(c_count=[{"wildcard": "*"}]), EV, False, "wildcard-star-not-number"),
    case({"source": [{"wildcard": "aws.ec2"}]}, EV, True, "wildcard-without-star-is-exact"),
    case(d(n=[{"wildcard": "a*b*c"}]), event({"n": "axxbyyc"}), True, "wildcard-ordered-segments"),
    case(d(n=[{"wildcard": "a*b*c"}]), event({"n": "acb"}), False, "wildcard-segments-out-of-order"),
    case(d(n=[{"wildcard": "a*a"}]), event({"n": "a"}), False, "wildcard-segments-do-not-overlap"),
    case(d(n=[{"wildcard": "a*a"}]), event({"n": "aa"}), True, "wildcard-star-matches-empty"),
    case(d(n=[{"wildcard": r"price\*"}]), event({"n": "price*"}), True, "escaped-star-is-literal"),
    case(d(n=[{"wildcard": r"price\*"}]), event({"n": "prices"}), False, "escaped-star-not-wildcard"),
    case(d(n=[{"wildcard": r"a\\*"}]), event({"n": "a\\anything"}), True, "escaped-backslash-then-star"),
    case(d(n=[{"wildcard": r"\**"}]), event({"n": "*x"}), True, "escaped-star-then-star"),
    case(d(n=[{"wildcard": "*b*"}]), event({"n": "a" * 5000}), False, "wildcard-long-value-no-match"),
]

ANYTHING_BUT = [
    case(d(state=[{"anything-but": "initializing"}]), EV, True, "string"),
    case(d(state=[{"anything-but": "running"}]), EV, False, "string-excluded"),
    case(d(state=[{"anything-but": ["stopped", "overloaded"]}]), EV, True, "string-list"),
    case(d(state=[{"anything-but": ["stopped", "running"]}]), EV, False, "string-list-excluded"),
    case(d(x_limit=[{"anything-but": 123}]), EV, True, "number"),
    case(d(c_count=[{"anything-but": [100, 200, 5]}]), EV, False, "number-list-excluded"),
    case(d(c_count=[{"anything-but": [5.0]}]), EV, False, "number-excluded-by-value"),
    case(d(c_count=[{"anything-but": "5"}]), EV, True, "string-does-not-exclude-number"),
    case(d(state=[{"anything-but": 5}]), EV, True, "number-does-not-exclude-string"),
    case(d(owner=[{"anything-but": "x"}]), EV, True, "null-is-not-excluded"),
    case(d(gone=[{"anything-but": "x"}]), EV, False, "missing-field-no-match"),
    case(d(tags=[{"anything-but": "prod"}]), EV, True, "array-with-other-element"),
    case(d(tags=[{"anything-but": ["prod", "web"]}]), EV, False, "array-all-excluded"),
    case({"region": [{"anything-but": {"prefix": "eu-"}}]}, EV, True, "prefix"),
    case({"region": [{"anything-but": {"prefix": "us-"}}]}, EV, False, "prefix-excluded"),
    case({"region": [{"anything-but": {"prefix": ["eu-", "us-"]}}]}, EV, False, "prefix-list-excluded"),
    case(d(FileName=[{"anything-but": {"suffix": ".png"}}]), EV, True, "suffix"),
    case(d(FileName=[{"anything-but": {"suffix": ".PNG"}}]), EV, False, "suffix-excluded"),
    case(d(state=[{"anything-but": {"equals-ignore-case": "RUNNING"}}]), EV, False, "ignore-case-excluded"),
    case(d(state=[{"anything-but": {"equals-ignore-case": ["Stopped"]}}]), EV, True, "ignore-case-list"),
    case(d(FilePath=[{"anything-but": {"wildcard": "*/lib/*"}}]), EV, False, "wildcard-excluded"),
    case(d(FilePath=[{"anything-but": {"wildcard": "*/bin/*"}}]), EV, True, "wildcard"),
    case(d(c_count=[{"anything-but": {"prefix": "5"}}]), EV, True, "prefix-does-not-exclude-number"),
]

NUMERIC = [
    case(d(c_count=[{"numeric": [">", 0, "<=", 5]}]), EV, True, "range-inclusive-top"),
    case(d(c_count=[{"numeric": [">", 5, "<=", 10]}]), EV, False, "range-open-bottom"),
    case(d(c_count=[{"numeric": [">=", 5, "<", 6]}]), EV, True, "range-inclusive-bottom"),
    case(d(c_count=[{"numeric": [">", 0, "<", 5]}]), EV, False, "range-open-top"),
    case(d(d_count=[{"numeric": ["<", 10]}]), EV, True, "upper-only"),
    case(d(d_count=[{"numeric": ["<=", 2]}]), EV, False, "upper-only-fails"),
    case(d(d_count=[{"numeric": [">=", 3]}]), EV, True, "lower-only-equal"),
    case(d(x_limit=[{"numeric": ["=", 3.018e2]}]), EV, True, "equals-exponent"),
    case(d(c_count=[{"numeric": ["=", 5.0]}]), EV, True, "equals-int-vs-float"),
    case(d(c_count=[{"numeric": ["=", 4]}]), EV, False, "equals-differs"),
    case(d(spot=[{"numeric": ["<", 1]}]), EV, False, "bool-is-not-a-number"),
    case(d(n=[{"numeric": [">", 0]}]), event({"n": True}), False, "true-is-not-a-number"),
    case(d(n=[{"numeric": [">", 0]}]), event({"n": "5"}), False, "numeric-string-is-not-a-number"),
    case(d(n=[{"numeric": [">", -1.5, "<", -1]}]), event({"n": -1.25}), True, "negative-floats"),
    case(d(n=[{"numeric": [">", 0]}]), event({"n": 6e9}), False, "event-number-outside-range"),
    case(d(n=[{"numeric": [">", 10]}]), event({"n": [1, 2, 30]}), True, "array-any-number"),
    case(d(n=[{"numeric": [">", 10]}, {"numeric": ["<", 0]}]), event({"n": -3}), True, "alternatives"),
]

EXISTS = [
    case(d(c_count=[{"exists": True}]), EV, True, "true-present"),
    case(d(c_count=[{"exists": True}]), event(drop=("c-count",)), False, "true-missing"),
    case(d(owner=[{"exists": True}]), EV, True, "true-null-is-present"),
    case(d(placement=[{"exists": True}]), EV, False, "true-object-is-not-a-leaf"),
    case(d(tags=[{"exists": True}]), event({"tags": []}), False, "true-empty-array"),
    case(d(c_count=[{"exists": False}]), event(drop=("c-count",)), True, "false-missing"),
    case(d(c_count=[{"exists": False}]), EV, False, "false-present"),
    case(d(owner=[{"exists": False}]), EV, False, "false-null-is-present"),
    case(d(c_count=[{"exists": False}]), event({"c-count": {"c1": 100}}), True, "false-object-is-not-a-leaf"),
    case({"detail": {"c-count": [{"exists": False}]}}, {"source": "aws.ec2"}, True, "false-parent-missing"),
    case({"detail": {"c-count": [{"exists": False}]}}, {"detail": "text"}, True, "false-parent-scalar"),
    case(d(items={"sku": [{"exists": False}]}), event({"items": [{"sku": "A1"}, {"qty": 2}]}), False,
         "false-one-array-element-has-it"),
    case(d(items={"note": [{"exists": False}]}), EV, True, "false-no-array-element-has-it"),
    case(d(items={"sku": ["B2"], "note": [{"exists": False}]}),
         event({"items": [{"sku": "B2"}, {"note": 1}]}), True, "false-anchored-to-matching-element"),
    case(d(state=["stopped", {"exists": False}]), event(drop=("state",)), True, "false-or-value-missing"),
    case(d(state=["stopped", {"exists": False}]), EV, False, "false-or-value-present-other"),
]

CIDR = [
    case(d(source_ip=[{"cidr": "10.0.0.0/24"}]), EV, True, "ipv4-inside"),
    case(d(source_ip=[{"cidr": "10.0.1.0/24"}]), EV, False, "ipv4-outside"),
    case(d(source_ip=[{"cidr": "10.0.0.7/8"}]), EV, True, "host-bits-masked"),
    case(d(ip=[{"cidr": "2001:db8::/32"}]), event({"ip": "2001:db8::1"}), True, "ipv6-inside"),
    case(d(ip=[{"cidr": "2001:db8::/32"}]), event({"ip": "2001:db9::1"}), False, "ipv6-outside"),
    case(d(ip=[{"cidr": "10.0.0.0/8"}]), event({"ip": "::ffff:10.0.0.1"}), False, "ipv6-not-ipv4"),
    case(d(ip=[{"cidr": "10.0.0.0/8"}]), event({"ip": "not-an-ip"}), False, "not-an-address"),
    case(d(ip=[{"cidr": "10.0.0.0/8"}]), event({"ip": 10}), False, "number-not-an-address"),
]

OR = [
    case({"$or": [{"source": ["aws.s3"]}, {"region": ["us-west-1"]}]}, EV, True, "top-second-branch"),
    case({"$or": [{"source": ["aws.s3"]}, {"region": ["eu-west-1"]}]}, EV, False, "top-no-branch"),
    case({"source": ["aws.ec2"], "$or": [{"region": ["eu-west-1"]}, d(state=["running"])]}, EV, True,
         "and-with-or"),
    case({"source": ["aws.s3"], "$or": [{"region": ["us-west-1"]}, d(state=["running"])]}, EV, False,
         "and-field-fails"),
    case({"detail": {"$or": [{"c-count": [{"numeric": [">", 10]}]}, {"d-count": [3]}]}}, EV, True, "nested"),
    case({"detail": {"$or": [{"c-count": [6]}, {"d-count": [4]}]}}, EV, False, "nested-no-branch"),
    case({"$or": [{"source": ["aws.s3"]}, {"region": ["eu-west-1"], "account": ["111122223333"]},
                  {"detail": {"$or": [{"state": ["stopped"]}, {"spot": [False]}]}}]}, EV, True, "or-in-or"),
    case({"$or": [d(state=["x"]), d(c_count=[{"exists": False}])]}, event(drop=("c-count",)), True,
         "branch-by-absence"),
    case({"$or": [{"source": ["aws.s3"]}, {"source": ["aws.ec2"]}], "detail": {"$or": [{"state": ["x"]},
          {"state": ["running"]}]}}, EV, True, "parallel-ors"),
]

COMPLEX = [
    case({
        "time": [{"prefix": "2017-12-22"}],
        "detail": {
            "state": [{"anything-but": "initializing"}],
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"anything-but": [100, 200, 300]}],
            "source-ip": [{"cidr": "10.0.0.0/8"}],
        },
    }, EV, True, "docs-complex-example"),
    case({
        "source": ["aws.ec2"],
        "detail": {"state": ["running"], "c-count": [{"numeric": [">", 10]}]},
    }, EV, False, "one-operator-fails"),
]


@pytest.mark.parametrize(
    ("pattern", "ev", "expected"),
    [*EXACT, *ARRAYS, *NESTED, *PREFIX, *SUFFIX, *IGNORE_CASE, *WILDCARD, *ANYTHING_BUT, *NUMERIC,
     *EXISTS, *CIDR, *OR, *COMPLEX],
)
def test_matches(pattern: dict[str, Any], ev: dict[str, Any], expected: bool) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.matches(ev) is expected
    assert compile_pattern(json.dumps(pattern)).matches(ev) is expected  # JSON text, same meaning


def bad(pattern: Any, message: str, name: str) -> Any:
    return pytest.param(pattern, message, id=name)


INVALID = [
    # the pattern as a whole
    bad("[1, 2]", r"^pattern must be a JSON object, got a list$", "not-an-object"),
    bad("{\"source\": [", r"^pattern is not valid JSON", "not-json"),
    bad('{"source": ["a"], "source": ["b"]}', r"duplicate field 'source'", "duplicate-field"),
    bad('{"detail": {"n": [NaN]}}', r"NaN is not a JSON number", "nan"),
    bad({}, r"^pattern: an empty object is not allowed$", "empty-pattern"),
    bad({"detail": {}}, r"^detail: an empty object is not allowed$", "empty-nested-object"),
    bad({"source": "aws.ec2"}, r"^source: must be an object or an array of values, got 'aws.ec2'$",
        "leaf-not-array"),
    bad(d(c_count=5), r"^detail\.c-count: must be an object or an array of values, got 5$", "leaf-number"),
    bad({"source": []}, r"^source: an empty array matches nothing", "empty-array"),
    bad({"source": [["aws.ec2"]]}, r"^source\[0\]: a value must be a string, number, .* got a list$",
        "nested-list-value"),
    bad({"source": [{}]}, r"^source\[0\]: an empty object is not a match expression$", "empty-operator"),
    bad({"source": [{"prefix": "a", "suffix": "b"}]},
        r"^source\[0\]: a match expression has one operator, got 2", "two-operators"),
    bad({"source": [{"contains": "ec2"}]}, r"^source\[0\]: unknown operator 'contains'", "unknown-operator"),
    bad({1: ["x"]}, r"field names must be strings", "non-string-field-name"),
    # prefix / suffix / equals-ignore-case
    bad({"time": [{"prefix": 2017}]}, r"^time\[0\]\.prefix: needs a string or \{\"equals-ignore-case\"",
        "prefix-number"),
    bad({"time": [{"prefix": {"wildcard": "2017*"}}]}, r"^time\[0\]\.prefix: only equals-ignore-case can go",
        "prefix-wrong-inner"),
    bad({"time": [{"prefix": {"equals-ignore-case": 5}}]},
        r"prefix\.equals-ignore-case: needs a string, got 5", "prefix-ignore-case-number"),
    bad(d(FileName=[{"suffix": [".png"]}]), r"^detail\.FileName\[0\]\.suffix: needs a string or",
        "suffix-list"),
    bad({"source": [{"equals-ignore-case": None}]}, r"equals-ignore-case: needs a string, got null",
        "ignore-case-null"),
    # wildcard
    bad(d(FilePath=[{"wildcard": 5}]), r"wildcard: needs a string, got 5", "wildcard-number"),
    bad(d(FilePath=[{"wildcard": "a**b"}]), r"wildcard: consecutive '\*' at position 1", "wildcard-**"),
    bad(d(FilePath=[{"wildcard": r"a\d"}]), r"wildcard: invalid escape at position 1", "wildcard-bad-escape"),
    bad(d(FilePath=[{"wildcard": "a\\"}]), r"wildcard: invalid escape", "wildcard-trailing-backslash"),
    # anything-but
    bad(d(state=[{"anything-but": None}]), r"anything-but: needs a string, a number, .* got null",
        "anything-but-null"),
    bad(d(state=[{"anything-but": True}]), r"anything-but: needs .* got true", "anything-but-bool"),
    bad(d(state=[{"anything-but": []}]), r"anything-but: the list is empty", "anything-but-empty-list"),
    bad(d(state=[{"anything-but": ["a", 1]}]), r"only strings or only numbers, not both", "anything-but-mix"),
    bad(d(state=[{"anything-but": ["a", None]}]), r"anything-but\[1\]: only strings and numbers are excluded",
        "anything-but-null-in-list"),
    bad(d(state=[{"anything-but": {"numeric": [">", 1]}}]),
        r"unsupported operator 'numeric' inside anything-but", "anything-but-numeric"),
    bad(d(state=[{"anything-but": {}}]), r"anything-but: needs exactly one of prefix", "anything-but-{}"),
    bad(d(state=[{"anything-but": {"prefix": ""}}]), r"anything-but\.prefix: an empty prefix is not allowed",
        "anything-but-empty-prefix"),
    bad(d(state=[{"anything-but": {"suffix": 3}}]),
        r"anything-but\.suffix: needs a string or a non-empty list", "anything-but-suffix-number"),
    bad(d(state=[{"anything-but": {"wildcard": "a**"}}]), r"anything-but\.wildcard: consecutive",
        "anything-but-bad-wildcard"),
    # numeric
    bad(d(price=[{"numeric": ">"}]), r"^detail\.price\[0\]\.numeric: needs a list like", "numeric-not-list"),
    bad(d(price=[{"numeric": []}]), r"numeric: needs a list like", "numeric-empty"),
    bad(d(price=[{"numeric": [">", "x"]}]),
        r"^detail\.price\[0\]\.numeric: needs an operator and a number, got '>' then 'x'$",
        "numeric-not-number"),
    bad(d(price=[{"numeric": [">"]}]), r"got '>' then nothing$", "numeric-missing-number"),
    bad(d(price=[{"numeric": [">", True]}]), r"got '>' then true$", "numeric-bool-operand"),
    bad(d(price=[{"numeric": ["=>", 1]}]), r"numeric: unknown operator '=>'", "numeric-unknown-operator"),
    bad(d(price=[{"numeric": ["<", 5, ">", 0]}]), r"a range is a lower bound .* got '<' then '>'",
        "numeric-upper-then-lower"),
    bad(d(price=[{"numeric": [">", 0, ">", 5]}]), r"a range is a lower bound", "numeric-two-lower"),
    bad(d(price=[{"numeric": [">", 0, "<", 5, "<", 6]}]), r"at most one lower and one upper bound",
        "numeric-too-many"),
    bad(d(price=[{"numeric": [">", 5, "<", 5]}]), r"numeric: empty range, 5 is not below 5", "numeric-empty"),
    bad(d(price=[{"numeric": [">=", 9, "<=", 1]}]), r"empty range, 9 is not below 1", "numeric-inverted"),
    bad(d(price=[{"numeric": ["<", 6e9]}]), r"outside the supported range -5e9\.\.5e9", "numeric-too-big"),
    bad(d(price=[{"numeric": ["=", 1, "<", 2]}]), r"'=' stands alone", "numeric-equals-with-more"),
    # exists
    bad(d(state=[{"exists": "yes"}]), r"^detail\.state\[0\]\.exists: needs true or false, got 'yes'$",
        "exists-string"),
    bad(d(state=[{"exists": None}]), r"exists: needs true or false, got null", "exists-null"),
    # cidr
    bad(d(ip=[{"cidr": "10.0.0.0"}]), r"cidr: '10\.0\.0\.0' is not a CIDR block", "cidr-no-length"),
    bad(d(ip=[{"cidr": "10.0.0.300/24"}]), r"cidr: '10\.0\.0\.300/24' is not a CIDR block", "cidr-bad-ip"),
    bad(d(ip=[{"cidr": 10}]), r"cidr: needs a string like", "cidr-number"),
    # $or
    bad({"$or": {"source": ["a"]}}, r"^\$or: needs a list of at least 2 objects, got an object$", "or-obj"),
    bad({"$or": [{"source": ["a"]}]}, r"^\$or: needs at least 2 alternatives, got 1$", "or-one-branch"),
    bad({"detail": {"$or": [{"a": [1]}, "b"]}}, r"^detail\.\$or\[1\]: each alternative must be an object",
        "or-branch-not-object"),
    bad({"$or": [{"source": ["a"]}, {}]}, r"^\$or\[1\]: an empty object is not allowed$", "or-empty-branch"),
    bad({"$or": [{"numeric": [1]}, {"prefix": ["a"]}]}, r"^\$or\[0\]\.numeric: 'numeric' is an operator name",
        "or-reserved-field-name"),
    bad({"$or": [{"a": {"exists": [1]}}, {"b": [1]}]}, r"'exists' is an operator name", "or-reserved-nested"),
    # limits
    bad({"source": ["x" * 2100]}, r"^pattern is \d+ characters of JSON, more than the 2048 allowed$", "long"),
    bad(json.loads('{"a":' * 33 + "[1]" + "}" * 33), r"nested deeper than 32 objects", "too-deep"),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID)
def test_invalid_patterns(pattern: Any, message: str) -> None:
    with pytest.raises(InvalidPattern, match=message):
        compile_pattern(pattern)


def test_invalid_pattern_is_a_value_error() -> None:
    assert issubclass(InvalidPattern, ValueError)
    assert issubclass(InvalidTransform, ValueError)


def test_exists_true_needs_a_leaf_and_false_matches_deep_absence() -> None:
    pattern = compile_pattern({"detail": {"a": {"b": [{"exists": False}]}}})
    assert pattern.matches(event({"a": {"c": 1}}))
    assert pattern.matches({"id": "x"})
    assert not pattern.matches(event({"a": {"b": None}}))


def test_compiled_once_matches_many_events() -> None:
    pattern = compile_pattern(d(c_count=[{"numeric": [">", 0, "<=", 5]}], state=["running"]))
    results = [pattern.matches(event({"c-count": n})) for n in range(-2, 9)]
    assert results == [n in range(1, 6) for n in range(-2, 9)]


def test_matching_does_no_json_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing and serialising happen in compile_pattern only; Pattern.matches walks the event."""
    pattern = compile_pattern(
        '{"source": ["aws.ec2"], "$or": [{"detail": {"state": [{"anything-but": "x"}]}}, {"id": ["y"]}],'
        ' "detail": {"FilePath": [{"wildcard": "*/lib/*"}], "c-count": [{"numeric": [">", 1]}]}}'
    )

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("JSON work at match time")

    monkeypatch.setattr(json, "loads", forbidden)  # the module's json is this json
    monkeypatch.setattr(json, "dumps", forbidden)
    assert all(pattern.matches(EV) for _ in range(100))
    assert not pattern.matches(event(source="aws.s3"))


def test_pattern_text_is_canonical_and_hashable() -> None:
    a = compile_pattern('{ "source" : [ "aws.ec2" ] }')
    b = compile_pattern({"source": ["aws.ec2"]})
    assert a.text == b.text == '{"source":["aws.ec2"]}'
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, Pattern)


def test_matches_convenience_accepts_every_form() -> None:
    compiled = compile_pattern({"source": ["aws.ec2"]})
    assert matches(compiled, EV)
    assert matches({"source": ["aws.ec2"]}, EV)
    assert matches('{"source": ["aws.ec2"]}', EV)
    assert not matches('{"source": ["aws.s3"]}', EV)


def test_the_event_is_not_modified() -> None:
    ev = event()
    before = copy.deepcopy(ev)
    pattern = {"detail": {"items": {"sku": [{"exists": False}]}, "tags": [{"prefix": "p"}]}}
    compile_pattern(pattern).matches(ev)
    assert ev == before


def test_limit_is_compact_json() -> None:
    """Whitespace in JSON text does not count towards the 2048 characters."""
    body = json.dumps({"source": ["x" * 2000]}, indent=8) + " " * 200
    assert len(body) > 2048
    assert compile_pattern(body).matches({"source": "x" * 2000})


# --- input transformer ---------------------------------------------------------------------------

PATHS = {"instance": "$.detail.instance-id", "state": "$.detail.state", "count": "$.detail.c-count"}


def tx(paths: dict[str, str], template: str, expected: Any, name: str, ev: dict[str, Any] | None = None,
       ) -> Any:
    return pytest.param(paths, template, ev if ev is not None else EV, expected, id=name)


TRANSFORMS = [
    tx(PATHS, '"instance <instance> is in <state>"', "instance i-1234567890abcdef0 is in running",
       "docs-simple-string"),
    tx(PATHS, r'"instance \"<instance>\" is in <state>"', 'instance "i-1234567890abcdef0" is in running',
       "docs-escaped-quotes"),
    tx(PATHS, '{"instance": <instance>, "state": <state>}',
       {"instance": "i-1234567890abcdef0", "state": "running"}, "docs-simple-json"),
    tx(PATHS, '{"state": "<state>", "status": "instance \\"<instance>\\" is in <state>"}',
       {"state": "running", "status": 'instance "i-1234567890abcdef0" is in running'}, "docs-strings"),
    tx(PATHS, '{"instance": <instance>, "state": [9, <state>, true], "Transformed": "Yes"}',
       {"instance": "i-1234567890abcdef0", "state": [9, "running", True], "Transformed": "Yes"},
       "docs-mixed"),
    tx(PATHS, '{"n": <count>, "text": "<count> things"}', {"n": 5, "text": "5 things"}, "number-twice"),
    tx({"p": "$.detail.placement"}, '{"where": <p>}', {"where": {"zone": "us-west-1a", "tenancy": "default"}},
       "object-as-json"),
    tx({"p": "$.detail.placement"}, '{"where": "<p>"}',
       {"where": '{"zone":"us-west-1a","tenancy":"default"}'}, "object-inside-string-is-its-json-text"),
    tx({"gone": "$.detail.nothing"}, '{"v": <gone>}', {"v": None}, "missing-path-json-is-null"),
    tx({"gone": "$.detail.nothing"}, '{"v": "[<gone>]"}', {"v": "[]"}, "missing-path-in-string-is-empty"),
    tx({"gone": "$.detail.nothing"}, "value: <gone>.", "value: .", "missing-path-in-text-is-empty"),
    tx({"r": "$.resources[0]"}, '{"arn": <r>}',
       {"arn": "arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"}, "array-index"),
    tx({"r": "$.resources[5]"}, '{"arn": <r>}', {"arn": None}, "array-index-out-of-range"),
    tx({"skus": "$.detail.items[*].sku"}, '{"skus": <skus>}', {"skus": ["A1", "B2"]}, "array-wildcard"),
    tx({"zone": "$.detail.placement.*"}, "<zone>", ["us-west-1a", "default"], "object-wildcard"),
    tx({"all": "$"}, "<all>", EV, "whole-event"),
    tx({"s": "$.detail.state"}, "<s>", "running", "lone-placeholder-is-the-value"),
    tx({"i": "$.detail.instance-id", "s": "$.detail.state"}, "<i> is in state <s>",
       "i-1234567890abcdef0 is in state running", "plain-text"),
    tx({"t": "$.detail.tags"}, "tags: <t>", 'tags: ["prod","web"]', "plain-text-list-as-json"),
    tx({"q": "$.detail.quote"}, '{"msg": "said <q>"}', {"msg": 'said "hi" \\ bye'}, "quotes-in-value-escaped",
       event({"quote": '"hi" \\ bye'})),
    tx({}, '{"e": <aws.events.event>}',
       {"e": {k: v for k, v in EV.items() if k != "detail"}}, "predefined-event-without-detail"),
    tx({}, '{"e": <aws.events.event.json>}', {"e": EV}, "predefined-event-json"),
    tx({}, "<aws.events.event.json>", EV, "lone-event-json"),
    tx({}, '{"broken": }', '{"broken": }', "not-json-returns-text"),
    tx(PATHS, '{"flag": false}', {"flag": False}, "no-placeholders"),
]


@pytest.mark.parametrize(("paths", "template", "ev", "expected"), TRANSFORMS)
def test_transforms(paths: dict[str, str], template: str, ev: dict[str, Any], expected: Any) -> None:
    assert compile_transform(paths, template).apply(ev) == expected


def test_transform_context_variables() -> None:
    transform = compile_transform(
        {},
        '{"rule": <aws.events.rule-name>, "arn": "<aws.events.rule-arn>",'
        ' "at": <aws.events.event.ingestion-time>}',
    )
    arn = "arn:aws:events:us-east-2:123456789012:rule/example"
    assert transform.apply(EV, rule_name="example", rule_arn=arn, ingestion_time="2017-12-22T18:43:49Z") == {
        "rule": "example", "arn": arn, "at": "2017-12-22T18:43:49Z"}
    assert transform.apply(EV) == {"rule": None, "arn": "", "at": None}  # not given: missing
    triggered = compile_transform({}, '"<aws.events.rule-name> triggered"')
    assert triggered.apply(EV, rule_name="ex") == "ex triggered"


def test_transform_render_is_the_delivered_text() -> None:
    transform = compile_transform(PATHS, '{"instance": <instance>, "n": <count>}')
    assert transform.render(EV) == '{"instance": "i-1234567890abcdef0", "n": 5}'


def test_transform_does_not_share_the_event() -> None:
    result = compile_transform({"p": "$.detail.placement"}, "<p>").apply(EV)
    result["zone"] = "changed"
    assert EV["detail"]["placement"]["zone"] == "us-west-1a"


BAD_TRANSFORMS = [
    pytest.param({"x": "detail.x"}, "<x>", r"input_paths\['x'\]: a path starts with '\$', got 'detail\.x'",
                 id="path-without-dollar"),
    pytest.param({}, '{"a": <nope>}', r"input_template: unknown placeholder <nope>", id="unknown-name"),
    pytest.param({f"v{i}": "$.id" for i in range(101)}, "<v0>",
                 r"input_paths has 101 paths, more than the 100", id="too-many-paths"),
    pytest.param({"aws.events.event": "$.id"}, "x", r"names starting with 'aws\.' are reserved",
                 id="reserved-name"),
    pytest.param({"bad name": "$.id"}, "x", r"a name is up to 256 letters, digits", id="bad-name"),
    pytest.param({"x": "$.detail..x"}, "<x>", r"cannot read '\$\.detail\.\.x' at position 8", id="empty"),
    pytest.param({"x": "$.a[-1]"}, "<x>", r"cannot read", id="negative-index"),
    pytest.param({"x": "$['a']"}, "<x>", r"cannot read", id="bracket-notation"),
    pytest.param({"x": 5}, "<x>", r"a path must be a string, got 5", id="path-not-string"),
    pytest.param({}, '{"e": "<aws.events.event>"}',
                 r"<aws\.events\.event> can only be the value of a JSON field", id="event-inside-string"),
    pytest.param({}, "event: <aws.events.event.json>", r"can only be the value of a JSON field",
                 id="event-in-text"),
    pytest.param({}, 5, r"input_template must be a string", id="template-not-string"),
    pytest.param({}, "x" * 8193, r"input_template is 8193 characters", id="template-too-long"),
]


@pytest.mark.parametrize(("paths", "template", "message"), BAD_TRANSFORMS)
def test_invalid_transforms(paths: Any, template: Any, message: str) -> None:
    with pytest.raises(InvalidTransform, match=message):
        compile_transform(paths, template)
