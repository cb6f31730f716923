"""The event wire format and the pure fold over it."""

from __future__ import annotations

import pytest

from celery_agents.errors import ModelError
from celery_agents.events import (
    RunDone,
    RunFailed,
    RunState,
    TextDelta,
    dump_event,
    is_terminal,
    parse_event,
)
from celery_agents.messages import ChatMessage


def with_seq(event_json: str, seq: int) -> str:
    """What Redis publishes: the seq spliced in front (see streaming/scripts.py)."""
    return '{"seq":' + str(seq) + "," + event_json[1:]


def test_an_event_is_published_without_seq_and_parsed_with_it() -> None:
    wire = dump_event(TextDelta(run_id="r", text="hé"))
    assert '"seq"' not in wire
    event = parse_event(with_seq(wire, 7))
    assert isinstance(event, TextDelta) and (event.seq, event.text) == (7, "hé")


def test_the_fold_collects_text_and_ends_with_the_message() -> None:
    state = RunState("r")
    message = ChatMessage(content="ab", run_id="r")
    for seq, event in enumerate(
        [
            TextDelta(run_id="r", text="a"),
            TextDelta(run_id="r", text="b"),
            RunDone(run_id="r", message=message),
        ],
        start=1,
    ):
        state.apply(parse_event(with_seq(dump_event(event), seq)))
    assert state.done and state.text_parts == ["a", "b"] and state.result() == message
    assert state.last_seq == 3


def test_a_failed_run_raises_its_own_error_type() -> None:
    state = RunState("r")
    failed = RunFailed(run_id="r", error=ModelError("down", status_code=503).to_json())
    assert is_terminal(failed)
    state.apply(failed)
    with pytest.raises(ModelError, match="down") as info:
        state.result()
    assert info.value.details == {"status_code": 503}


def test_member_events_do_not_end_the_parent_run() -> None:
    member_done = RunDone(run_id="parent", member="analyst", message=ChatMessage(content="x"))
    assert not is_terminal(member_done)
