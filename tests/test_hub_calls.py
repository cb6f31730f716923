"""``HubCalls``: a call made from another thread runs on the thread of kombu's hub, at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kombu.asynchronous import Hub

from celery_agents.workers.hub_calls import HubCalls


class RunningHub:
    """kombu's hub looping in its own thread, as Celery's consumer runs it."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        loop = self.hub.create_loop()
        while not self.stopping.is_set():
            next(loop)  # sleeps up to a second in epoll when nothing is ready

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.hub.close()


@pytest.fixture
def hub() -> Iterator[RunningHub]:
    running = RunningHub()
    yield running
    running.stop()


def test_a_call_runs_on_the_hubs_thread_without_waiting_for_its_timer(hub: RunningHub) -> None:
    calls = HubCalls()
    calls.attach(hub.hub)
    hub.thread.start()
    ran_on: list[threading.Thread] = []
    done = threading.Event()

    def record() -> None:
        ran_on.append(threading.current_thread())
        done.set()

    for _ in range(3):  # the hub sleeps in epoll between them; each call wakes it
        done.clear()
        calls.call(record)
        assert done.wait(0.5), "the hub was not woken for the call"
    assert ran_on == [hub.thread] * 3
    calls.detach()


def test_calls_made_together_all_run_in_order(hub: RunningHub) -> None:
    calls = HubCalls()
    calls.attach(hub.hub)
    seen: list[int] = []
    last = threading.Event()
    for i in range(100):
        calls.call(lambda i=i: seen.append(i))
    calls.call(last.set)
    hub.thread.start()
    assert last.wait(5)
    assert seen == list(range(100))
    calls.detach()


def test_a_failing_call_does_not_stop_the_others(hub: RunningHub) -> None:
    calls = HubCalls()
    calls.attach(hub.hub)
    hub.thread.start()
    after = threading.Event()
    calls.call(lambda: 1 / 0)
    calls.call(after.set)
    assert after.wait(5)
    calls.detach()


def test_without_a_hub_a_call_runs_at_once_and_detach_runs_what_waits() -> None:
    calls = HubCalls()
    ran: list[str] = []
    calls.call(lambda: ran.append("no hub"))
    assert ran == ["no hub"]
    idle = Hub()  # attached but never looping: its calls wait
    calls.attach(idle)
    calls.call(lambda: ran.append("waiting"))
    assert ran == ["no hub"]
    calls.detach()
    assert ran == ["no hub", "waiting"]
    calls.call(lambda: ran.append("after"))
    assert ran == ["no hub", "waiting", "after"]
    idle.close()


def test_calls_made_while_the_broker_was_away_run_once_attached_again(hub: RunningHub) -> None:
    # On a lost broker connection Celery resets its hub (our reader goes), and attaches the
    # pool again once reconnected.
    calls = HubCalls()
    calls.attach(hub.hub)
    hub.hub.reset()
    during, after = threading.Event(), threading.Event()
    calls.call(during.set)  # a run that ended while the consumer reconnected
    calls.attach(hub.hub)
    hub.thread.start()
    assert during.wait(5), "a call made before the new attach was left waiting"
    calls.call(after.set)
    assert after.wait(5), "a call after the new attach was left waiting"
    calls.detach()
