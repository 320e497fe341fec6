"""Waking idle SQLite workers: at once for an enqueue in this process, by a file-change
notification for a commit in another one.

A commit to a database in WAL mode appends to its ``-wal`` file. On Linux an inotify watch
on the database's directory reports that write to a thread that sleeps in the kernel until
then, so an idle worker costs no CPU and still starts a job committed by another process
within a millisecond. Where inotify is missing, the worker's read-only poll is the fallback.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import struct
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("sqlitejobq")

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def inotify_available() -> bool:
    """True where idle workers can be woken by file events (Linux)."""
    return _libc is not None


#: Watchers alive in this process; a forked child closes its copies of their descriptors.
_open_watchers: set[DirectoryWatcher] = set()


class DirectoryWatcher:
    """Calls ``on_change`` from a thread of its own whenever one of the files ``names`` in
    ``directory`` is written, created or moved in (inotify), while it watches.

    It watches only between ``watch()`` and ``unwatch()``: a watch costs every write to the
    directory a kernel event, so it is set only while someone sleeps waiting for one, and a
    busy process pays nothing for commits. OSError if inotify is unavailable.
    """

    def __init__(self, directory: str, names: frozenset[str], on_change: Callable[[], None]):
        if _libc is None:
            raise OSError("inotify is not available on this platform")
        self._directory = os.fsencode(directory)
        self._names = frozenset(os.fsencode(name) for name in names)
        self._on_change = on_change
        self._watch = -1
        self._fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        try:
            self.watch()  # fails here, not later, where the directory cannot be watched
            self.unwatch()
        except OSError:
            os.close(self._fd)
            raise
        self._stop_read, self._stop_write = os.pipe()
        self._pid = os.getpid()
        _open_watchers.add(self)
        self._thread = threading.Thread(target=self._run, name="sqlitejobq-watch", daemon=True)
        self._thread.start()

    def watch(self) -> None:
        """Start reporting changes."""
        if self._watch < 0:
            assert _libc is not None
            self._watch = _libc.inotify_add_watch(
                self._fd, self._directory, _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO
            )
            if self._watch < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch({self._directory!r})")

    def unwatch(self) -> None:
        """Stop reporting changes (and stop costing the writers anything)."""
        if self._watch >= 0:
            assert _libc is not None
            _libc.inotify_rm_watch(self._fd, self._watch)
            self._watch = -1

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_read in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                log.exception("file watcher failed; idle workers fall back to polling")
                return
            if self._matches(data):
                self._on_change()

    def _matches(self, data: bytes) -> bool:
        offset = 0
        while offset + _EVENT.size <= len(data):
            length = _EVENT.unpack_from(data, offset)[3]
            start = offset + _EVENT.size
            if data[start : start + length].rstrip(b"\0") in self._names:
                return True
            offset = start + length
        return False

    def close(self) -> None:
        """Stop the thread and release the descriptors."""
        _open_watchers.discard(self)
        if self._pid == os.getpid():
            os.write(self._stop_write, b"x")
            self._thread.join(5.0)
        for fd in (self._fd, self._stop_read, self._stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)


def _close_inherited_watchers() -> None:
    for watcher in list(_open_watchers):
        watcher.close()


os.register_at_fork(after_in_child=_close_inherited_watchers)


class FileWaker:
    """Wakes the idle workers of this process that wait on one database file (one per
    process and file, shared by every queue on it).

    ``notify`` (an enqueue here) sets their events at once; while any worker listens, a
    directory watcher sets them when another process writes the file's write-ahead log.
    The counters tell a woken worker why: a change means there may be new work.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self.enqueued = 0
        self.signals = 0
        self._listeners: set[threading.Event] = set()
        self._lock = threading.Lock()
        self._watcher: DirectoryWatcher | None = None
        self._sleepers = 0

    @property
    def watching(self) -> bool:
        """True while a file watcher reports other processes' commits."""
        return self._watcher is not None

    def notify(self) -> None:
        """A job was enqueued (or re-queued) in this process: wake its idle workers."""
        self.enqueued += 1
        for event in list(self._listeners):
            event.set()

    def _file_changed(self) -> None:
        self.signals += 1
        for event in list(self._listeners):
            event.set()

    def listen(self, event: threading.Event, active: bool = True) -> None:
        """Have (or, with ``active`` false, stop having) ``event`` set on every wake-up."""
        with self._lock:
            if active:
                self._listeners.add(event)
                if self._watcher is None:
                    self._watcher = self._start_watcher()
            else:
                self._listeners.discard(event)
                if not self._listeners and self._watcher is not None:
                    self._watcher.close()
                    self._watcher = None

    def sleeping(self, asleep: bool) -> None:
        """A listener goes to sleep waiting for work (or wakes up): the file is watched only
        while one sleeps. A commit made before the watch began is not reported: after this
        call with ``asleep`` true, look once more before sleeping."""
        with self._lock:
            self._sleepers += 1 if asleep else -1
            if self._watcher is None:
                return
            try:
                if self._sleepers > 0:
                    self._watcher.watch()
                else:
                    self._watcher.unwatch()
            except OSError as exc:
                log.warning(
                    "file watcher of %s failed (%s): idle workers poll instead", self.path, exc
                )
                self._watcher.close()
                self._watcher = None

    def _start_watcher(self) -> DirectoryWatcher | None:
        directory, name = os.path.split(self.path)
        try:
            return DirectoryWatcher(directory, frozenset({name + "-wal"}), self._file_changed)
        except OSError as exc:
            log.info("no file watcher for %s (%s): idle workers poll instead", self.path, exc)
            return None


class SqliteWaker:
    """A queue's view of its file's waker: the shared wake-ups, and a look of its own
    (``PRAGMA data_version`` on the calling thread's connection)."""

    def __init__(self, shared: Callable[[], FileWaker], look: Callable[[], int]) -> None:
        self._shared = shared
        self._look = look

    def look(self) -> int:
        """``PRAGMA data_version``: changes whenever another connection commits."""
        return self._look()

    @property
    def enqueued(self) -> int:
        """Counts this process's enqueues on the file."""
        return self._shared().enqueued

    @property
    def signals(self) -> int:
        """Counts the file events of other processes' commits."""
        return self._shared().signals

    @property
    def watching(self) -> bool:
        """True while a file watcher reports other processes' commits."""
        return self._shared().watching

    def notify(self) -> None:
        """A job was enqueued in this process: wake its idle workers."""
        self._shared().notify()

    def listen(self, event: threading.Event, active: bool = True) -> None:
        """Have (or stop having) ``event`` set on every wake-up."""
        self._shared().listen(event, active)

    def sleeping(self, asleep: bool) -> None:
        """Watch the file only while a listener sleeps."""
        self._shared().sleeping(asleep)
