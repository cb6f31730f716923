"""``SseDecoder``: server-sent events out of the bytes of a response body, as they arrive.

Pure (no I/O): feed it whatever the socket gave, get back the events those bytes completed.
It follows the WHATWG event-stream rules that chat-completion servers use: lines end in LF,
CRLF or CR (a CR at the end of one read may be the first half of a CRLF); ``data:`` lines of
one event are joined with LF; a blank line ends the event; lines starting with ``:`` are
comments; ``id:`` and ``retry:`` are ignored (a model stream is never resumed); one UTF-8
byte order mark at the very start is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str | None = None


class SseDecoder:
    def __init__(self) -> None:
        self._tail = b""  # an unfinished line
        self._data: list[str] = []
        self._event: str | None = None
        self._begun = False  # past a leading byte order mark, if any

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by ``chunk`` (none until their blank line has arrived)."""
        buffer, keep = self._tail + chunk, b""
        if not self._begun:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):  # maybe a split BOM
                self._tail = buffer
                return []
            self._begun = True
            buffer = buffer.removeprefix(_BOM)
        if buffer.endswith(b"\r"):  # maybe half of a CRLF: decide with the next read
            buffer, keep = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._tail = lines.pop() + keep
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[SseEvent]:
        events: list[SseEvent] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append(SseEvent("\n".join(self._data), self._event))
                self._data, self._event = [], None
                continue
            field, _, value = raw.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                self._data.append(value.decode())
            elif field == b"event":
                self._event = value.decode()
            # "" (a comment), "id", "retry" and unknown fields are ignored
        return events

    def close(self) -> list[SseEvent]:
        """The last event when the stream ended without its blank line."""
        last, self._tail = self._tail.rstrip(b"\r"), b""
        return self._lines([last, b""] if last else [b""])
