"""Every exception that crosses the broker round-trips through JSON (and pickle)."""

from __future__ import annotations

import json
import pickle

import pytest

from celery_agents.errors import (
    CeleryAgentsError,
    ModelError,
    RunError,
    UserError,
    all_error_types,
    error_from_json,
)


@pytest.mark.parametrize("error_type", all_error_types(), ids=lambda t: t.__name__)
def test_every_error_round_trips_through_json(error_type: type[CeleryAgentsError]) -> None:
    error = error_type(
        "something specific went wrong", run_id="r1", status_code=503, extra=[1, "x"]
    )
    wire = json.loads(json.dumps(error.to_json()))
    again = error_from_json(wire)
    assert type(again) is error_type
    assert again == error
    assert again.message == "something specific went wrong"
    assert again.details == {"run_id": "r1", "status_code": 503, "extra": [1, "x"]}


@pytest.mark.parametrize("error_type", all_error_types(), ids=lambda t: t.__name__)
def test_every_error_survives_pickling(error_type: type[CeleryAgentsError]) -> None:
    error = error_type("boom", attempt=2)
    assert pickle.loads(pickle.dumps(error)) == error


def test_an_unknown_error_type_becomes_a_run_error_that_keeps_its_name() -> None:
    again = error_from_json({"type": "SomethingNew", "message": "m", "details": {}})
    assert type(again) is RunError
    assert again.details["original_type"] == "SomethingNew"


def test_user_errors_and_run_errors_are_apart() -> None:
    assert issubclass(ModelError, RunError) and not issubclass(ModelError, UserError)
    for error_type in all_error_types():
        assert error_type is CeleryAgentsError or issubclass(error_type, UserError | RunError)
