"""Schemathesis against the API's own OpenAPI document, over real HTTP: whatever a client
sends that the document allows, no answer is a 5xx.

Each operation's cases come from ``operation.as_strategy()`` under Hypothesis's ``@given``
(schemathesis's pytest loader reads a private attribute pytest 9.2 dropped)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from celery_agents.embedded.api_server import ApiProcess
from tests.support.http_api import api, bearer, new_key

__all__ = ["api"]  # the module's server (a fixture)

pytestmark = pytest.mark.usefixtures("agents")
EXAMPLES = 25  # per operation: bounded, so the suite stays quick


def test_no_request_the_document_allows_gets_a_server_error(api: ApiProcess) -> None:
    headers = bearer(new_key(api, "ops", "--admin"))
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)

        no_server_error()
