"""Waking idle PostgreSQL workers: at once for an enqueue in this process, by LISTEN/NOTIFY
for an enqueue anywhere.

An enqueue sends ``pg_notify`` inside its own transaction, so the notification is
delivered when (and only if) it commits; a process sends at most one per queue every
``notify_debounce`` seconds (a transaction that notified takes a global lock at commit).
While a worker listens, one connection of the process, outside the pool, waits in
``LISTEN`` and wakes the workers. A worker woken by a notification looks at the queue again
for a short while after it, so that a job whose notification was left out by the debounce
is found too. Without a listener (``poll_only``; behind a pooler in transaction mode with
no direct ``listen_url``; or while the listening connection is down) the workers look once
a second. Enqueues notify unless ``poll_only`` says nobody listens: behind a transaction
pooler, workers elsewhere may listen on a direct connection.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg

from . import queries as sql

log = logging.getLogger("sqlitejobq")

#: How often a worker without a listener reads the queue for new work.
POLL_EVERY = 1.0


class PgWaker:
    """Wakes the idle workers of this process that wait on one queue's schema."""

    def __init__(
        self,
        url: str,
        connect_kwargs: dict[str, Any],
        channel: str,
        *,
        poll_only: bool,
        debounce: float,
        notifies: bool = True,
    ) -> None:
        self.url = url
        self.connect_kwargs = connect_kwargs
        self.channel = channel
        self.poll_only = poll_only
        #: Whether enqueues send NOTIFY: other processes may listen where this one cannot
        #: (behind a transaction pooler, workers listen on a direct connection).
        self.notifies = notifies
        self.debounce = debounce
        self.enqueued = 0
        self.signals = 0
        self._listeners: set[threading.Event] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = False
        self._last_signal = 0.0
        self._sent: dict[str, float] = {}  # queue: when this process last notified it

    @property
    def watching(self) -> bool:
        """True while the listening connection is up."""
        return self._connected

    def notify(self) -> None:
        """A job was enqueued in this process and committed: wake its idle workers."""
        self.enqueued += 1
        for event in list(self._listeners):
            event.set()

    def channels_to_notify(self, queues: set[str]) -> list[str]:
        """The queues of an enqueue that this process has not notified in the last
        ``notify_debounce`` seconds (the others' workers are awake already)."""
        if not self.notifies:
            return []
        now = time.monotonic()
        due = [q for q in sorted(queues) if now - self._sent.get(q, -1e9) >= self.debounce]
        for queue in due:
            self._sent[queue] = now
        return due

    def listen(self, event: threading.Event, active: bool = True) -> None:
        """Have (or stop having) ``event`` set on every wake-up; the first listener starts
        the LISTEN connection, the last one stops it."""
        with self._lock:
            if active:
                self._listeners.add(event)
                if self._thread is None and not self.poll_only:
                    # each LISTEN thread has its own stop flag: one told to stop goes on
                    # its own (within one wait for notifications), however soon a new one
                    # starts, and whoever stops it does not wait for that
                    self._stop = threading.Event()
                    self._thread = threading.Thread(
                        target=self._run,
                        args=(self._stop,),
                        name="sqlitejobq-listen",
                        daemon=True,
                    )
                    self._thread.start()
            else:
                self._listeners.discard(event)
                if not self._listeners and self._thread is not None:
                    self._stop.set()
                    self._thread = None

    def sleeping(self, asleep: bool) -> None:
        """The listener costs nothing while everyone is busy: nothing to switch."""

    def look(self) -> int:
        """Changes when there may be new work: with every notification, and, for a short
        while after one (notifications left out by the debounce) or when nobody listens,
        at every look (each a read of the queue's next due time)."""
        now = time.monotonic()
        if not self._connected:
            return int(now / POLL_EVERY)
        if now - self._last_signal < 4 * self.debounce + 0.02:
            return -int(now * 1000) - 1
        return self.signals

    def _signal(self) -> None:
        self.signals += 1
        self._last_signal = time.monotonic()
        for event in list(self._listeners):
            event.set()

    def _run(self, stop: threading.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, **self.connect_kwargs) as conn:
                    conn.execute(sql.listen(self.channel))
                    self._connected = True
                    backoff = 0.1
                    self._signal()  # what was enqueued while not listening is looked at now
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._signal()
            except psycopg.Error as exc:
                if self._connected:
                    log.warning(
                        "the LISTEN connection to %s broke (%s); workers poll until it is back",
                        self.channel,
                        exc,
                    )
                self._connected = False
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if self._stop is stop:  # a thread told to stop leaves its successor's state
                    self._connected = False
