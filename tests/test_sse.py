"""The event-stream decoder: events come out whole, however the bytes were split."""

from __future__ import annotations

import pytest

from celery_agents.llm.sse import SseDecoder, SseEvent

STREAM = (
    b": a comment\r\n"
    b'data: {"a": 1}\r\n\r\n'
    b"event: error\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"id: 7\rretry: 10\rdata: cr only\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SseEvent('{"a": 1}'),
    SseEvent("line one\nline two", "error"),
    SseEvent("cr only"),
    SseEvent("[DONE]"),
]


def decode(pieces: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def test_a_stream_read_at_once_gives_every_event() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_a_stream_read_in_small_pieces_gives_the_same_events(size: int) -> None:
    # Pieces of one byte split every CRLF in two: a CR at the end of a read is not a line end yet.
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(pieces) == EXPECTED


def test_an_event_waits_for_its_blank_line() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.feed(b"\n") == [SseEvent("x")]


def test_the_last_event_without_its_blank_line_is_given_at_the_end() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: x\n\ndata: y") == [SseEvent("x")]
    assert decoder.close() == [SseEvent("y")]


def test_a_field_without_a_space_after_the_colon_keeps_its_value() -> None:
    assert decode([b"data:x\n\ndata:  two spaces\n\n"]) == [SseEvent("x"), SseEvent(" two spaces")]


@pytest.mark.parametrize("size", [1, 2, 4, len(STREAM) + 3])
def test_a_leading_byte_order_mark_is_dropped_however_it_is_split(size: int) -> None:
    stream = b"\xef\xbb\xbf" + b'data: {"a": 1}\n\n'
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert decode(pieces) == [SseEvent('{"a": 1}')]


def test_only_a_byte_order_mark_at_the_very_start_is_dropped() -> None:
    # Later in the stream it is part of a field name, so that line is not a data line.
    assert decode([b"data: x\n\n\xef\xbb\xbfdata: y\n\n"]) == [SseEvent("x")]
