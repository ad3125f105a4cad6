"""schemathesis over the control plane's own /openapi.json, with the admin token, against `cumulus up`
(no node, so nothing a generated request deploys can run): every answer's status is one the document
lists for its route, with the documented shape, and none is a 500 `InternalError` (a fault of the
platform itself). Valid and invalid requests, with the token and with a wrong one. Bounded: 12
examples per operation and kind, no deadline per example."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from helpers import RunningPlatform, start_platform
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

pytestmark = [pytest.mark.adversarial, pytest.mark.docker]

# What the document promises: the statuses, content types, bodies and headers each route answers.
# (schemathesis's positive/negative data checks are left out: the API rightly refuses many
# schema-valid bodies, a zip that is no zip or a config that is no JSON, with their typed 4xx.)
CHECKS = [checks.status_code_conformance, checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance]

# Headers that frame the HTTP message itself. Negative mode may generate them with garbage values
# (`content-length: 7) kv`), and then the request is no HTTP at all: the server's parser answers
# 400 "Invalid HTTP request received." before any route sees it. That tests the parser, not the API.
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[RunningPlatform]:
    plat = start_platform(tmp_path_factory.mktemp("openapi") / "cp",
                          args=("--min-nodes", "0", "--max-nodes", "0"), wait_for_node=False)
    try:
        yield plat
    finally:
        plat.stop()


def _examples(operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str],
              seen: dict[str, set[int]]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def examples(case: schemathesis.Case) -> None:
        for name in [h for h in case.headers or {} if h.lower() in FRAMING]:
            del case.headers[name]
        response = case.call(headers=headers, timeout=30)
        seen.setdefault(operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 500:
            assert response.json()["error"]["type"] != "InternalError", response.text

    examples()


def test_every_answer_is_documented_and_none_is_the_platforms_fault(bare: RunningPlatform) -> None:
    schema = schemathesis.openapi.from_url(f"{bare.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    seen: dict[str, set[int]] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for headers in (bare.headers, {"Authorization": "Bearer wrong"}):
                try:
                    _examples(operation, mode, headers, seen)
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing of it can be invalid (no parameter)
    print("\nstatuses seen per operation:", {k: sorted(v) for k, v in sorted(seen.items())})
