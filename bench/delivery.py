"""Row 14: delivery latency, from a run's end to the webhook receiver's 200.

One worker runs ``test:echo`` agent runs (20 in flight), each with a signed webhook to a
receiver on loopback. A run's end is its record's ``ended_at`` (the body's ``timestamp``); the
receiver notes when it answered. Shown beside it: the same receiver's latency for a bare
``httpx2`` POST of the same body from this process, the part no queue can save.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
from figures import Row, part_main, percentile, size, value_row
from stack import agents_stack

from celery_agents import Agent

IN_FLIGHT = 20
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # listen()'s backlog, as a web server's is (socketserver's: 5)
    daemon_threads = True


class Receiver:
    """Answers 200 to every POST and keeps (the run's end, when it answered) per body."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                answered = time.time()
                ended = datetime.fromisoformat(json.loads(body)["timestamp"]).timestamp()
                with outer._lock:
                    outer.latencies.append(answered - ended)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self._lock:
            return len(self.latencies)

    def take(self) -> list[float]:
        with self._lock:
            taken, self.latencies = self.latencies, []
        return taken


async def _runs(agent: Agent, count: int, url: str) -> None:
    slots = asyncio.Semaphore(IN_FLIGHT)
    target = [{"webhook": url, "secret_env": "BENCH_HOOK_SECRET"}]

    async def one() -> None:
        async with slots:
            await agent.run("x", store_history=False, deliver=target)

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(one())


async def _bare(url: str, count: int) -> None:
    """Plain POSTs of a body like ours, sent from here (the receiver notes their latency)."""
    async with httpx2.AsyncClient() as http:
        for _ in range(count):
            stamp = datetime.now().astimezone().isoformat()
            body = json.dumps({"type": "run.succeeded", "timestamp": stamp, "data": {}})
            response = await http.post(url, content=body, headers={"webhook-id": "bench"})
            response.raise_for_status()


def _wait_for(receiver: Receiver, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while receiver.count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {receiver.count()} of {count} deliveries arrived")
        time.sleep(0.01)


def measure() -> list[Row]:
    count = size(1000, 200, "BENCH_DELIVERY_RUNS")
    receiver = Receiver()
    try:
        env = {"BENCH_HOOK_SECRET": SECRET}
        with agents_stack(concurrency=IN_FLIGHT, worker_env=env):
            agent = Agent("bench", "test:echo")
            asyncio.run(_runs(agent, 50, receiver.url))  # warm up
            _wait_for(receiver, 50)
            receiver.take()
            asyncio.run(_runs(agent, count, receiver.url))
            _wait_for(receiver, count)
            ours = receiver.take()
        asyncio.run(_bare(receiver.url, count))
        bare = receiver.take()
    finally:
        receiver.server.shutdown()
    note = (
        f"{count} test:echo runs, {IN_FLIGHT} in flight, one worker (threads -c {IN_FLIGHT}); "
        "signed webhook to a receiver on loopback; from the run's recorded end to the "
        "receiver's 200; bare: a plain httpx2 POST from the bench process"
    )
    return [
        value_row(
            "14",
            "delivery latency p50, run end to receiver 200",
            "ms",
            1000 * percentile(ours, 0.5),
            bare=1000 * percentile(bare, 0.5),
            note=note,
        ),
        value_row(
            "14",
            "delivery latency p95, run end to receiver 200",
            "ms",
            1000 * percentile(ours, 0.95),
            bare=1000 * percentile(bare, 0.95),
            at_most=250,
            note=note,
        ),
    ]


if __name__ == "__main__":
    part_main(measure)
