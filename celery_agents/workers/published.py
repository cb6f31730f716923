"""``Published``: what the earlier attempts of a run already sent its callers, read from the
run's replay log, so a resumed run does not send it twice.

A resumed run replays its journaled steps (their text and tool events come again) and then
makes live the step its worker died in, whose answer may have been half streamed. Its text is
matched against what went out, delta by delta: what matches is dropped, the rest is published.
A model that answers differently the second time is published from where it differs (the
final message is whole either way; the stream then holds both beginnings).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Published:
    run_id: str
    text: str = ""  # the run's text deltas as they went out, joined
    calls: set[str] = field(default_factory=set)  # tool call ids whose call event went out
    results: set[str] = field(default_factory=set)  # ...and whose result event did
    cursor: int = 0
    diverged: bool = False

    @classmethod
    def from_log(cls, run_id: str, log_entries: list[bytes]) -> Published:
        seen = cls(run_id)
        texts: list[str] = []
        for raw in log_entries:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("run_id") != run_id:
                continue
            kind = event.get("kind")
            if kind == "text.delta":
                texts.append(str(event.get("text", "")))
            elif kind == "tool.call":
                seen.calls.add(str(event.get("tool_call_id")))
            elif kind == "tool.result":
                seen.results.add(str(event.get("tool_call_id")))
        seen.text = "".join(texts)
        return seen

    def unseen(self, delta: str) -> str:
        """The part of ``delta`` the run's callers have not had yet."""
        if self.diverged:
            return delta
        start = self.cursor
        ahead = self.text[start : start + len(delta)]
        self.cursor += len(delta)
        same = _common(delta, ahead)
        if same == len(delta):
            return ""
        if start + same < len(self.text):
            log.warning(
                "run %s: the answer made again differs from the one streamed before its "
                "worker died (at character %d); streamed from there",
                self.run_id,
                start + same,
            )
        self.diverged = True  # past what went out: nothing more to match
        return delta[same:]


def _common(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` share from their start."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
