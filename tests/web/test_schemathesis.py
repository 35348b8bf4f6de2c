"""Schemathesis against the real controller: requests generated from /api/v1/openapi.json, valid
ones and invalid ones, each answer checked against the document. The document must describe
exactly what the server accepts: no 5xx, only documented statuses and content types, answers of
the documented shape, and every request the document calls invalid refused with a 4xx.

Bounded: `EXAMPLES` requests per operation and mode, derandomized (the same requests each run),
no shrinking; the test prints how many requests it sent and how many operations failed.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.conftest import ADMIN, ALICE
from tests.web.harness import Client, Testbed

# Bounded in time as well as in examples: about a minute on a loaded two-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A testbed of its own: generated requests delete users and agents and take nodes."""
    bed = Testbed(tmp_path_factory.mktemp("fuzz")).start()
    try:
        bed.create_user(ADMIN, admin=True)
        bed.create_user(ALICE)
        bed.register_agents(ADMIN, bed.start_agents([("rpi", "raspberry", 3)], time_scale=0.002))
        yield bed
    finally:
        bed.stop()


def _fuzz(operation, mode: GenerationMode, base_url: str, headers: dict[str, str], statuses: Counter) -> int:
    """Sends up to EXAMPLES generated requests for one operation; the number sent. Raises the
    first failed check (schemathesis' FailureGroup, which shows the request to reproduce it)."""
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    sent = 0

    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        nonlocal sent
        sent += 1
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=headers)

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid: an operation without parameters or body in negative mode.
        assert mode is GenerationMode.NEGATIVE and sent == 0
    return sent


def test_schemathesis_finds_no_difference_between_the_openapi_document_and_the_server(fuzzed):
    document = Client(fuzzed.url).get("/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    base_url = f"{fuzzed.url}/api/v1"
    headers = {"Authorization": f"Bearer {fuzzed.api_token(ADMIN)}"}
    sent = operations = 0
    statuses: Counter = Counter()
    began = time.monotonic()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent += _fuzz(operation, mode, base_url, headers, statuses)
            except BaseExceptionGroup as exc:  # schemathesis' FailureGroup: checks failed
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    print(
        f"\nschemathesis: {sent} requests over {operations} operations in {time.monotonic() - began:.0f} s, "
        f"{len(failures)} failures; answers: {dict(sorted(statuses.items()))}"
    )
    assert not failures, "\n\n".join(failures)
    assert not fuzzed.server_errors, "\n\n".join(fuzzed.server_errors)
