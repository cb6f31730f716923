"""``EventHub``: one pub/sub connection per client process, multiplexing every watched run.

A ``RunWatch`` delivers one run's events exactly once and in ``seq`` order, ending with the
terminal event. Live events come from pub/sub; whatever pub/sub missed (a late attach, a
dropped connection, a message lost while resubscribing) is read back from the replay log. A
slow poll of the runs' seq counters catches losses that no later event would reveal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import ClientClosed
from ..events import Event, is_terminal, parse_event
from ..keys import Keys
from ..text import as_text
from .replay import read_replay

log = logging.getLogger(__name__)

_RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class RunWatch:
    """The ordered, de-duplicated event stream of one run, as seen by one consumer."""

    def __init__(self, hub: EventHub, run_id: str, from_seq: int) -> None:
        self.run_id = run_id
        self.next_seq = from_seq
        self.finished = False
        self._hub = hub
        # What is ready to read, and the reader waiting for more (lighter than a Queue: a
        # client may hold a thousand watches at once).
        self._ready: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._early: dict[int, Event] = {}
        self._filling = False
        self._abandoned: BaseException | None = None
        # The epoch the seq numbers count in, and the epochs left behind: events were lost
        # (``gap`` says why) when the stream started over, or the log no longer had them.
        self.epoch: str | None = None
        self._retired: set[str] = set()
        self.gap: str | None = None

    def offer(self, event: Event) -> None:
        """Take an event from pub/sub or the log; out-of-order ones wait for the gap to fill."""
        if self.finished or (event.epoch is not None and event.epoch in self._retired):
            return
        if event.epoch is not None and event.epoch != self.epoch:
            if self.epoch is None:
                self.epoch = event.epoch
            else:
                self.restart(event.epoch)
        if event.seq < self.next_seq:
            return
        if event.seq > self.next_seq:
            self._early[event.seq] = event
            self._hub.request_fill(self)
            return
        self._deliver(event)
        while self.next_seq in self._early:
            self._deliver(self._early.pop(self.next_seq))

    def restart(self, epoch: str) -> None:
        """The run's stream started over in ``epoch`` (Redis lost its keys): what was not
        delivered of the old one is gone; the new one counts from 1."""
        if self.epoch is not None:
            self._retired.add(self.epoch)
        self.epoch = epoch
        self._early = {s: e for s, e in self._early.items() if e.epoch == epoch}
        self.next_seq = 1
        self.gap = self.gap or "the run's stream started over (Redis lost its keys)"
        log.warning("run %s: its stream started over; events in between are lost", self.run_id)
        self._hub.request_fill(self)

    def _deliver(self, event: Event) -> None:
        self.next_seq = event.seq + 1
        self._ready.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if is_terminal(event):
            self.finished = True
            self._early.clear()

    async def fill(self) -> None:
        """Read what pub/sub has not delivered from the replay log."""
        if self._filling or self.finished or self._hub.closed:
            return
        self._filling = True
        try:
            for event in await read_replay(
                self._hub.redis, self._hub.keys, self.run_id, self.next_seq
            ):
                self.offer(event)
            if self._early and not self.finished:
                # The log no longer holds the missing events (trimmed or expired): skip ahead
                # rather than wait forever; the gap is logged for the operator.
                first = min(self._early)
                log.warning(
                    "run %s: events %d..%d are gone from the replay log",
                    self.run_id,
                    self.next_seq,
                    first - 1,
                )
                self.gap = self.gap or f"events {self.next_seq}..{first - 1} were lost"
                self.next_seq = first
                self.offer(self._early.pop(first))
        finally:
            self._filling = False

    def abandon(self, error: BaseException) -> None:
        """No more events will come (the hub is closing): the reader gets ``error``."""
        self._abandoned = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_event(self) -> Event:
        while not self._ready:
            if self._abandoned is not None:
                raise self._abandoned
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._ready.popleft()

    async def events(self) -> AsyncIterator[Event]:
        """Yield every event up to and including the terminal one, then stop watching."""
        try:
            while True:
                event = await self.next_event()
                yield event
                if is_terminal(event):
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        await self._hub.unwatch(self)


class EventHub:
    """Owns the process's pub/sub connection; lives on one event loop."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, poll_interval: float = 2.0) -> None:
        self.redis = client
        self.keys = keys
        self._poll_interval = poll_interval
        self._client_channel = keys.client_channel(uuid.uuid4().hex)
        self._pubsub: aioredis.client.PubSub | None = None
        self._watches: dict[str, set[RunWatch]] = {}
        self._confirm: dict[str, deque[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._fills: set[asyncio.Task[None]] = set()
        self._leaving: set[str] = set()
        self._unsubscribing: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._connected = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if self._closed:  # a watch begun after close() would hold a connection no one closes
                raise ClientClosed("the facade was shut down or configured again")
            await self._connect()
            self._tasks = [
                asyncio.create_task(self._read_loop(), name="celery-agents-hub-reader"),
                asyncio.create_task(self._poll_loop(), name="celery-agents-hub-poller"),
            ]
            self._started = True

    async def _connect(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            # Staying subscribed to our own channel keeps the reader blocked on the socket
            # while no run is watched, instead of spinning.
            await pubsub.subscribe(self._client_channel)
            if self._watches:
                await pubsub.subscribe(*self._watches)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
            raise
        self._pubsub = pubsub
        self._connected.set()

    async def watch(
        self, run_id: str, from_seq: int = 1, *, replay: bool = True, confirmed: bool = True
    ) -> RunWatch:
        """Start watching ``run_id``; returns once subscribed, so nothing published later is missed.

        With ``replay`` (attaching to a run that may have started) events already published are
        read back from the replay log; a run not sent yet passes ``replay=False``.

        ``confirmed=False`` returns once the SUBSCRIBE is written, without waiting for Redis to
        confirm it: for a run sent right after, on another connection. Redis holds the
        SUBSCRIBE before the send, so it subscribes before any worker can publish. Should the
        network still reorder them, a later event's gap or the seq poll reads the log.
        """
        await self.start()
        watch = RunWatch(self, run_id, from_seq)
        channel = self.keys.run_channel(run_id)
        watchers = self._watches.setdefault(channel, set())
        watchers.add(watch)
        confirmation: asyncio.Future[None] | None = None
        try:
            if len(watchers) == 1 and self._pubsub is not None and self._connected.is_set():
                confirmation = asyncio.get_running_loop().create_future()
                self._confirm.setdefault(channel, deque()).append(confirmation)
                await self._pubsub.subscribe(channel)
                if confirmed:
                    await confirmation
            # Not connected: the reconnection subscribes every watched channel, then reads
            # what was missed from the log; the caller's deadline bounds the wait meanwhile.
            if replay and self._connected.is_set():
                await watch.fill()
        except BaseException:  # cancelled, or Redis failed us: nothing of it stays behind
            self._forget_confirmation(channel, confirmation)
            await self.unwatch(watch)
            raise
        return watch

    def _forget_confirmation(self, channel: str, confirmation: asyncio.Future[None] | None) -> None:
        waiters = self._confirm.get(channel)
        if confirmation is None or not waiters or confirmation not in waiters:
            return
        waiters.remove(confirmation)
        if not waiters:
            del self._confirm[channel]

    async def unwatch(self, watch: RunWatch) -> None:
        """Stop watching; the channel is left in the background (with others left meanwhile,
        in one UNSUBSCRIBE), so the run's result never waits for it."""
        channel = self.keys.run_channel(watch.run_id)
        watchers = self._watches.get(channel)
        if not watchers or watch not in watchers:
            return
        watchers.discard(watch)
        if not watchers:
            del self._watches[channel]
            self._leaving.add(channel)
            if self._unsubscribing is None:
                self._unsubscribing = asyncio.get_running_loop().create_task(self._leave())

    async def _leave(self) -> None:
        try:
            while self._leaving:
                # A channel watched again meanwhile stays (its SUBSCRIBE went out after).
                channels = [c for c in self._leaving if c not in self._watches]
                self._leaving.clear()
                if channels and self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(*channels)
                        # Watched again while that went out: subscribe again (its
                        # confirmation reads back anything missed from the log).
                        again = [c for c in channels if c in self._watches]
                        if again:
                            await self._pubsub.subscribe(*again)
        finally:
            self._unsubscribing = None

    def request_fill(self, watch: RunWatch) -> None:
        task = asyncio.get_running_loop().create_task(self._safe_fill(watch))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _safe_fill(self, watch: RunWatch) -> None:
        try:
            await watch.fill()
        except (RedisError, OSError) as exc:
            log.warning("run %s: replay read failed: %s", watch.run_id, exc)

    async def _read_loop(self) -> None:
        attempt = 0
        while True:
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    raise RedisConnectionError("not connected")
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost, refused, or a reconnection that did not take
                self._connected.clear()
                delay = _RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warning("pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                await self._reconnect()
                continue
            attempt = 0
            if message is not None:
                try:
                    self._dispatch(message)
                except Exception:
                    log.exception("could not dispatch a pub/sub message")

    async def _reconnect(self) -> None:
        """A new pub/sub connection with every watched channel; None again if Redis is still
        away (the reader tries again), and the watches read what they missed from the log."""
        old, self._pubsub = self._pubsub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        try:
            await self._connect()
        except (RedisError, OSError) as exc:
            log.warning("pub/sub reconnect failed: %s", exc)
            return
        for watchers in list(self._watches.values()):
            for watch in list(watchers):
                self.request_fill(watch)

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        channel = as_text(message.get("channel"))
        if kind == "message":
            try:
                event = parse_event(message["data"])  # type: ignore[arg-type]
            except ValueError:
                log.warning("ignored a malformed event on %s", channel)
                return
            for watch in list(self._watches.get(channel, ())):
                watch.offer(event)
        elif kind == "subscribe":
            waiters = self._confirm.get(channel)
            if waiters:
                future = waiters.popleft()
                if not waiters:
                    del self._confirm[channel]
                if not future.done():
                    future.set_result(None)
            else:
                # A resubscription after a reconnect: anything sent meanwhile is in the log.
                for watch in list(self._watches.get(channel, ())):
                    self.request_fill(watch)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            watches = [w for ws in self._watches.values() for w in ws if not w.finished]
            if not watches:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for watch in watches:
                        pipe.get(self.keys.run_seq(watch.run_id))
                        pipe.get(self.keys.run_epoch(watch.run_id))
                    replies = await pipe.execute()
            except (RedisError, OSError):
                continue
            for n, watch in enumerate(watches):
                counter, raw_epoch = replies[2 * n], replies[2 * n + 1]
                epoch = as_text(raw_epoch) if raw_epoch is not None else None
                if epoch is not None and watch.epoch is not None and epoch != watch.epoch:
                    watch.restart(epoch)  # and the new epoch is read from its log
                elif counter is not None and int(counter) >= watch.next_seq:
                    self.request_fill(watch)

    async def close(self) -> None:
        """Stop; whoever still waits on a watch is told so at once (no event comes now)."""
        self._closed = True
        for watchers in list(self._watches.values()):
            for watch in watchers:
                watch.abandon(
                    ClientClosed(
                        f"stopped following run {watch.run_id}: the facade was shut down or "
                        "configured again; RunHandle.attach(run_id) follows it again"
                    )
                )
        pending = [*self._tasks, *self._fills]
        if self._unsubscribing is not None:
            pending.append(self._unsubscribing)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
            self._pubsub = None
        self._started = False
