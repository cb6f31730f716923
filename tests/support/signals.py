"""What a user's own module does: connect handlers to Celery's task signals, and turn on
OpenTelemetry's Celery instrumentation. The worker imports it through the manifest's tools.

Handlers write one JSON line per signal to ``$SIGNAL_LOG`` and spans to ``$SPAN_LOG``; a
worker without those variables records nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from celery import signals

from celery_agents import tool

_lock = threading.Lock()


@tool
def probe() -> str:
    """A tool, so that the manifest can name this module."""
    return "ok"


def _write(path_var: str, record: dict[str, Any]) -> None:
    path = os.environ.get(path_var)
    if not path:
        return
    line = json.dumps(record, default=str) + "\n"
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(line)


def _task_id(sender: Any, task_id: Any, request: Any) -> str | None:
    if task_id:
        return str(task_id)
    if request is not None:
        return str(getattr(request, "id", None) or getattr(request, "task_id", None))
    req = getattr(sender, "request", None)
    return getattr(req, "id", None)


def _handler(name: str) -> Any:
    def handle(sender: Any = None, **kw: Any) -> None:
        task_id = _task_id(sender, kw.get("task_id"), kw.get("request"))
        if name in ("before_task_publish", "after_task_publish"):
            task_id = (kw.get("headers") or {}).get("id")
        record: dict[str, Any] = {"signal": name, "task_id": task_id}
        exc = kw.get("exception")
        if exc is not None:
            record["exception"] = f"{type(exc).__name__}: {exc}"
        if name == "task_retry":
            record["reason"] = str(kw.get("reason"))
        _write("SIGNAL_LOG", record)

    return handle


SIGNALS = (
    "before_task_publish",
    "after_task_publish",
    "task_received",
    "task_prerun",
    "task_success",
    "task_failure",
    "task_retry",
    "task_postrun",
)
_handlers = [_handler(name) for name in SIGNALS]  # kept: Celery holds weak references
for _name, _handle in zip(SIGNALS, _handlers, strict=True):
    getattr(signals, _name).connect(_handle, weak=False)


def _instrument() -> None:
    """OpenTelemetry's Celery instrumentation, spans written to ``$SPAN_LOG``."""
    if not os.environ.get("SPAN_LOG"):
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class FileExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            for span in spans:
                context = span.get_span_context()
                _write(
                    "SPAN_LOG",
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(context.trace_id, "032x"),
                        "span_id": format(context.span_id, "016x"),
                        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "task_id": (span.attributes or {}).get("celery.task_id")
                        or (span.attributes or {}).get("messaging.message.id"),
                    },
                )
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)


_instrument()  # the worker imports this module as it starts, before any task
