"""The durable spool: an IngestQueue whose items live in files of a directory, so what a
process had not delivered when it died (SIGKILL, the OOM killer, a deploy during an
outage) is sent by the next client started on that directory.

Files, not sqlite3: appending 100 framed events and an acknowledgement costs ~1.0 µs of
CPU per event with `os.write`, ~3.7 µs with sqlite3 in WAL mode without syncing (measured
on the CI machine: the README's "Durable spool" has the figures).

The layout, the whole of it (tests/support/spool_files.py reads it independently):

- one directory; each process writes its own *segment* files, `pug-<pid>-<random>-<n>.pugspool`,
  each opened once and held with `flock(LOCK_EX)` while a client owns it (the lock goes with
  the process: SIGKILL releases it). A client adopts any segment it can lock: one that
  another process left. It never opens one this process holds (flock conflicts between
  two opens of one file, even in one process).
- a segment starts with FILE_MAGIC, then records: mark (2 bytes), payload length (u32 LE),
  CRC-32 of the payload (u32 LE), payload. A payload is one kind byte and a body: `E` a
  framed event as the queue holds it, `I` an encoded identify, `A` an acknowledgement (u64
  LE: every record that starts before this offset is finished: sent, failed or dropped).
- a damaged record (a torn write, a corrupt disk) fails its CRC or runs past the end of the
  file: it is skipped with a warning, and reading goes on at the next mark that starts a
  valid record, so nothing after it is lost. A damaged tail is cut off when adopted.

The callers' side (`put`) is what EventQueue does: an append to a list under one lock. A
writer thread appends what was put to the segment every `Spool.write_interval` seconds (the
longest an event sits only in memory; at once past half the memory bound), and so does the
worker before it takes a batch. A batch is taken only once written: from what was written,
still in memory within BatchConfig.max_queue_bytes, else read back from the file (an
adopted file is always read). A finished batch is acknowledged by an `A` record; a segment
that is full (`segment_bytes`) and finished is deleted.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import secrets
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pug._ingest.lifecycle import gevent_monkey
from pug._ingest.queue import (
    QUEUED,
    REFUSED,
    WAKE,
    Item,
    Ledger,
    QueuedIdentify,
    Stats,
    Taken,
    release,
    resolve_waiters,
)
from pug._ingest.validate import BATCH_MAX_EVENTS, MAX_REQUEST_BYTES

logger = logging.getLogger("pug")

SUFFIX: Final = ".pugspool"
FILE_MAGIC: Final = b"PUGSPOOL1\n"
MARK: Final = b"\xa5\x50"
_HEADER = struct.Struct("<2sII")  # mark, payload length, CRC-32 of the payload
HEADER_SIZE: Final = _HEADER.size
EVENT, IDENTIFY, ACK = 0x45, 0x49, 0x41  # b"E", b"I", b"A"
DAMAGED: Final = -1
_ACK = struct.Struct("<Q")
_CRC_E, _CRC_I = zlib.crc32(b"E"), zlib.crc32(b"I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_crc32 = zlib.crc32
_monotonic = time.monotonic


@dataclass(frozen=True)
class Spool:
    """Where and how a client keeps its events on disk (`Pug(..., spool=Spool(...))`).

    - `path`: a directory that exists and the process may write; several processes may
      share it (each writes its own files and adopts those of dead ones).
    - `max_bytes`: the bound on the events held on disk; past it the oldest are dropped and
      handed to `on_error` (counted as `dropped_queue_full`). Files may exceed it by up to
      one `segment_bytes` not yet deleted.
    - `fsync`: fsync each write, so events survive a machine crash or power loss too, not
      only the death of the process (a write lands in the page cache at once; the kernel
      writes it out within ~30 s). It costs one fsync per write (at most one every
      `write_interval`, and one per batch the worker takes): ~0.5 ms on an SSD.
    - `write_interval`: the longest an event sits only in memory before it is written.
    - `segment_bytes`: the size at which a file is closed and a new one started; a closed
      file is deleted once everything in it is finished.
    - `adopt_interval`: how often the directory is looked at for files of dead processes.
    """

    path: str | os.PathLike[str]
    max_bytes: int = 1 << 30
    fsync: bool = False
    write_interval: float = 0.05
    segment_bytes: int = 4 << 20
    adopt_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.max_bytes < MAX_REQUEST_BYTES:
            raise ValueError("Spool.max_bytes must be >= 512 KiB")
        if not 0 < self.write_interval <= 60 or self.adopt_interval <= 0:
            raise ValueError("Spool.write_interval must be in (0, 60] and adopt_interval > 0")
        if self.segment_bytes < 64 * 1024:
            raise ValueError("Spool.segment_bytes must be >= 64 KiB")


def _unpatched(name: str) -> Any:
    """`_thread.<name>` as it was before gevent patched it, if it did."""
    monkey = gevent_monkey()
    return getattr(_thread, name) if monkey is None else monkey.get_original("_thread", name)


class _Signal:
    """A flag one thread waits for and others raise, on a bare lock: held while lowered,
    and waiting for it lowers it again."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # raised already
            self._lock.release()

    def wait(self, timeout: float = -1) -> None:
        self._lock.acquire(timeout=timeout)


class SpoolError(Exception):
    """The spool cannot be used; the message says why (the client then keeps events in
    memory only)."""


def record(kind: int, body: bytes) -> bytes:
    """One record: header and payload."""
    payload = bytes((kind,)) + body
    return _pack_header(MARK, len(payload), _crc32(payload)) + payload


def _valid_at(buf: bytes, pos: int) -> bool:
    if len(buf) - pos < HEADER_SIZE:
        return False
    mark, size, crc = _unpack_header(buf, pos)
    end = pos + HEADER_SIZE + size
    return bool(
        mark == MARK
        and size >= 1
        and end <= len(buf)
        and _crc32(memoryview(buf)[pos + HEADER_SIZE : end]) == crc
    )


def read_records(buf: bytes, pos: int, base: int = 0) -> Iterator[tuple[int, int, int, bytes]]:
    """(start, end, kind, body) of each record of `buf` from `pos`, offsets plus `base`;
    a damaged span comes as kind DAMAGED (end: where the next valid record starts)."""
    n = len(buf)
    view = memoryview(buf)
    while pos < n:
        if n - pos >= HEADER_SIZE:
            mark, size, crc = _unpack_header(buf, pos)
            end = pos + HEADER_SIZE + size
            if (
                mark == MARK
                and size >= 1
                and end <= n
                and _crc32(view[pos + HEADER_SIZE : end]) == crc
            ):
                yield (
                    base + pos,
                    base + end,
                    buf[pos + HEADER_SIZE],
                    buf[pos + HEADER_SIZE + 1 : end],
                )
                pos = end
                continue
        following = buf.find(MARK, pos + 1)
        while following != -1 and not _valid_at(buf, following):
            following = buf.find(MARK, following + 1)
        stop = n if following == -1 else following
        yield base + pos, base + stop, DAMAGED, b""
        pos = stop


class _Segment:
    """One file this client holds (its own, or adopted), and how far it is read and
    finished. Offsets are in the file."""

    __slots__ = (
        "buf", "buf_at", "end", "fd", "frontier", "inflight", "name", "own", "path",
        "read_at", "sealed", "unread", "unread_bytes", "window",
    )  # fmt: skip

    def __init__(self, path: Path, fd: int, end: int, *, own: bool) -> None:
        self.path = path
        self.name = path.name
        self.fd = fd
        self.own = own
        self.end = end  # written up to here (a record boundary)
        self.read_at = len(FILE_MAGIC)  # the next record to take
        self.frontier = len(FILE_MAGIC)  # everything before is finished (acknowledged)
        self.sealed = not own  # no more records will be appended
        self.unread = 0  # records not taken yet
        self.unread_bytes = 0
        # Runs of records taken together, in file order: [end of the last, their bytes,
        # how many are not finished yet]; the finished prefix is acknowledged.
        self.inflight: deque[list[int]] = deque()
        self.buf = b""  # the file from buf_at, read once to be taken from
        self.buf_at = 0
        # The records this client wrote and has not taken, as it wrote them: (start, end,
        # item). Taken from here, not read back; None once dropped for the memory bound
        # (then, and for adopted files, they are read from the file).
        self.window: deque[tuple[int, int, Item]] | None = deque() if own else None


# The segments this process holds, by path: a client never opens one of them (a second
# open would conflict with the lock all the same, but there is nothing to learn there).
# No lock of its own: one set operation at a time is atomic, and a lock could be held by
# another thread at a fork, forever in the child.
_HELD: set[str] = set()


class SpoolQueue(Ledger):
    """The IngestQueue on disk (see the module's docstring); in memory it holds what was
    put and not yet written, bounded like EventQueue (by count and bytes)."""

    def __init__(
        self,
        spool: Spool,
        *,
        max_items: int,
        max_bytes: int,
        batch_size: int,
        max_wait: float,
    ) -> None:
        super().__init__(max_bytes=max_bytes)
        self.spool = spool
        self.directory = Path(spool.path)
        self._max_items = max_items  # held in memory, unwritten
        self._max_bytes = max_bytes
        # Past half the bounds, put() wakes the writer at once rather than after
        # write_interval: a burst is written before it reaches the bounds.
        self._soft_items = max_items // 2
        self._soft_bytes = max_bytes // 2
        self._batch_size = batch_size
        self._max_wait = max_wait
        # os.write, an attribute: a test puts one that fails as a full disk does.
        self._write: Callable[[int, bytes], int] = os.write
        # The files; taken before _lock, never inside it. Bare locks, and a bare thread for
        # the writer: under gevent, threading's are gevent's, and a greenlet waiting on one
        # that the worker's OS thread holds may never be woken (see lifecycle.wait_for).
        self._io = _unpatched("RLock")()
        self._pending: deque[Item] = deque()  # put, not written yet
        self._pending_bytes = 0
        self._on_disk = 0  # records written (or found) and not taken yet
        self._first_at: float | None = None
        self._identifies = 0  # identifies held (pending or on disk)
        self._left = 0  # taken at close, not delivered: left on disk for the next process
        self._given_up = False  # close() could not deliver: the rest stays on disk
        self._in_memory = False  # the disk failed: the pending deque is the queue
        self._released = False
        self._failure = OSError()  # the last write's error
        self._segments: list[_Segment] = []  # read in this order
        self._active: _Segment | None = None  # own, appended to
        self._sequence = 0
        self._prefix = f"pug-{os.getpid()}-{secrets.token_hex(4)}"
        self._live_bytes = 0  # records on disk not finished
        self._window_bytes = 0  # the records in the segments' windows, as on disk
        self._where: dict[int, tuple[_Segment, list[int]]] = {}  # id(taken item) → where
        self._identify_objects: dict[tuple[str, int], QueuedIdentify] = {}
        self._next_adopt = 0.0
        allocate_lock = _unpatched("allocate_lock")
        self._has_pending = _Signal(allocate_lock())  # by the put that finds nothing pending
        self._write_now = _Signal(allocate_lock())  # half the memory bound is pending; close
        self._stopping = False
        self._open()
        # Started now, not on the first put: the callers' path stays an append.
        _unpatched("start_new_thread")(self._write_loop, ())

    # ---- opening, adopting ------------------------------------------------------------

    def _open(self) -> None:
        """Check the directory and start this client's first file (raises SpoolError)."""
        directory = self.directory
        if not directory.exists():
            raise SpoolError(f"the spool directory {str(directory)!r} does not exist")
        if not directory.is_dir():
            raise SpoolError(f"the spool path {str(directory)!r} is not a directory")
        try:
            self._active = self._new_segment()
        except OSError as exc:
            raise SpoolError(
                f"cannot write in the spool directory {str(directory)!r}: {exc.strerror}"
            ) from None
        self._adopt(_monotonic())

    def _new_segment(self) -> _Segment:
        """A new file of this client, locked before it gets its name (so no other process
        adopts it before its header is written)."""
        self._sequence += 1
        name = f"{self._prefix}-{self._sequence:06d}{SUFFIX}"
        temporary = self.directory / (name + ".new")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write_all(fd, FILE_MAGIC)
            path = self.directory / name
            os.rename(temporary, path)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        _HELD.add(str(path))
        segment = _Segment(path, fd, len(FILE_MAGIC), own=True)
        self._segments.append(segment)
        return segment

    def _adopt(self, now: float) -> None:
        """Take over the files no live process holds (under _io)."""
        self._next_adopt = now + self.spool.adopt_interval
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            logger.warning("pug spool: cannot list %s: %s", self.directory, exc.strerror)
            return
        found = recovered = 0
        for name in names:
            path = self.directory / name
            if not name.endswith(SUFFIX):
                continue
            if str(path) in _HELD:
                continue
            segment = self._try_adopt(path)
            if segment is None:
                continue
            found += 1
            recovered += segment.unread
        if found:
            with self._lock:
                self._enqueued += recovered
                self._stats.recovered += recovered
                if recovered and not self._on_disk and not self._pending:
                    self._first_at = now - self._max_wait  # due now
                self._on_disk += recovered
            logger.info(
                "pug spool: adopted %d file(s) of %s left by earlier processes: %d item(s) "
                "to send", found, self.directory, recovered,
            )  # fmt: skip

    def _try_adopt(self, path: Path) -> _Segment | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            return None  # gone (its owner finished it) or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live process holds it
            return None
        try:
            stat = os.fstat(fd)
            if stat.st_nlink == 0:  # deleted by its owner between listing and locking
                os.close(fd)
                return None
            data = os.pread(fd, stat.st_size, 0)
        except OSError as exc:
            os.close(fd)
            logger.warning("pug spool: cannot read %s: %s", path, exc.strerror)
            return None
        if not data.startswith(FILE_MAGIC):
            os.close(fd)
            logger.error(
                "pug spool: %s is not a pug spool file (it does not start with the spool's "
                "header); it was left untouched", path,
            )  # fmt: skip
            return None
        segment = _Segment(path, fd, len(data), own=False)
        acknowledged = len(FILE_MAGIC)
        valid_end = len(FILE_MAGIC)
        damaged: list[tuple[int, int]] = []
        for start, end, kind, body in read_records(data, len(FILE_MAGIC)):
            if kind == DAMAGED:
                damaged.append((start, end))
                continue
            valid_end = end
            if kind == ACK:
                acknowledged = max(acknowledged, _ACK.unpack(body)[0])
        for start, end, kind, _ in read_records(data, acknowledged):
            if kind in (EVENT, IDENTIFY):
                segment.unread += 1
                segment.unread_bytes += end - start
        for start, end in damaged:
            tail = end == len(data)
            logger.warning(
                "pug spool: %s: skipped %d damaged byte(s) at offset %d (%s); "
                "the records after it are kept", path, end - start, start,
                "a write cut short by a crash" if tail else "a corrupt record",
            )  # fmt: skip
        if valid_end < len(data):  # a torn tail: cut, so what is appended next is read
            try:
                os.ftruncate(fd, valid_end)
            except OSError as exc:
                logger.warning("pug spool: cannot cut %s short: %s", path, exc.strerror)
            else:
                segment.end = valid_end
        segment.read_at = segment.frontier = acknowledged
        _HELD.add(str(path))
        if not segment.unread:
            self._delete(segment)
            return segment
        self._live_bytes += segment.unread_bytes
        # Before this client's own files: what was left waits longest.
        own_at = next((i for i, s in enumerate(self._segments) if s.own), len(self._segments))
        self._segments.insert(own_at, segment)
        return segment

    def _delete(self, segment: _Segment) -> None:
        """A segment with nothing left to send: delete it, then let it go (under _io)."""
        try:
            os.unlink(segment.path)
        except OSError as exc:
            logger.warning("pug spool: cannot delete %s: %s", segment.path, exc.strerror)
        os.close(segment.fd)
        segment.fd = -1
        _HELD.discard(str(segment.path))
        if segment in self._segments:
            self._segments.remove(segment)

    # ---- the callers' side --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pending) + self._on_disk

    def put(self, item: Item) -> int:
        """Hold `item` until the writer writes it: QUEUED, WAKE or REFUSED."""
        size = len(item)
        with self._lock:
            if not self._closed:
                pending = self._pending
                if not pending:
                    if not self._on_disk:
                        self._first_at = _monotonic()
                    if not self._in_memory:
                        self._has_pending.set()
                pending.append(item)
                self._pending_bytes += size
                self._enqueued += 1
                n = len(pending)
                if (
                    type(item) is bytes
                    and n <= self._soft_items
                    and self._pending_bytes <= self._soft_bytes
                ):
                    return WAKE if n + self._on_disk == self._batch_size else QUEUED
                outcome, lost = self._put_unusual(item, n)
            else:
                self._stats.dropped_invalid += 1
                outcome, lost = REFUSED, [item]
        release(lost, False)
        return outcome

    def _put_unusual(self, item: Item, n: int) -> tuple[int, list[Item]]:
        """An identify, or past half the memory bound (a burst; the disk is failing or
        slow): under _lock."""
        outcome = WAKE if n + self._on_disk == self._batch_size else QUEUED
        if not self._in_memory and (n > self._soft_items or self._pending_bytes > self._soft_bytes):
            self._write_now.set()
        if type(item) is not bytes:
            self._identifies += 1
            outcome = WAKE
        lost: list[Item] = []
        had_overflow = bool(self._overflow)
        pending = self._pending
        while len(pending) > self._max_items or self._pending_bytes > self._max_bytes:
            old = pending.popleft()
            self._pending_bytes -= len(old)
            self._identifies -= type(old) is not bytes
            if self._overflow_one(old):
                lost.append(old)
        if self._overflow and not had_overflow:
            outcome = WAKE
        return outcome, lost

    def close(self) -> bool:
        """Refuse further items and write what is pending; True the first time."""
        with self._lock:
            first, self._closed = not self._closed, True
        if first:
            self._stop_writer()
            with self._io:
                self._write_pending()
        return first

    def stats(self) -> Stats:
        with self._lock:
            return self._stats_now(len(self._pending) + self._on_disk + self._left)

    # ---- writing ----------------------------------------------------------------------

    def _stop_writer(self) -> None:
        self._stopping = True
        self._write_now.set()
        self._has_pending.set()

    def _write_loop(self) -> None:
        while not self._stopping:
            self._has_pending.wait()
            # What comes within write_interval is written with this one write.
            self._write_now.wait(self.spool.write_interval)
            with self._io:
                if self._released:
                    return
                self._write_pending()

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._write(fd, view)  # type: ignore[arg-type]
            view = view[written:]

    def _write_pending(self) -> None:
        """Append what was put to the active segment, one write per segment it fills
        (under _io)."""
        with self._lock:
            if self._in_memory or not self._pending or self._released:
                return
            items = list(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._on_disk += len(items)
        done = 0
        while done < len(items):
            segment = self._active
            assert segment is not None
            written = self._append(segment, items, done)
            if not written:
                self._disk_failed(items[done:], segment)
                return
            done += written
            if segment.end >= self.spool.segment_bytes:
                self._rotate()
        if self._live_bytes > self.spool.max_bytes:
            self._drop_oldest_on_disk()

    def _append(self, segment: _Segment, items: list[Item], first: int) -> int:
        """Write items from `first` to `segment`, as many as fit in it (one at least), in
        one write: how many were written, 0 if the write failed (under _io)."""
        parts: list[bytes] = []
        pack, crc32 = _pack_header, _crc32
        offset = start = segment.end
        room = self.spool.segment_bytes
        identifies: list[tuple[int, QueuedIdentify]] = []
        written: list[tuple[int, int, Item]] = []
        count = 0
        for item in itertools.islice(items, first, None):
            if offset >= room and count:
                break
            count += 1
            at = offset
            if type(item) is bytes:
                parts.append(pack(MARK, len(item) + 1, crc32(item, _CRC_E)) + b"E")
                parts.append(item)
                offset += HEADER_SIZE + 1 + len(item)
            else:
                assert isinstance(item, QueuedIdentify)
                identifies.append((offset, item))
                parts.append(pack(MARK, len(item.body) + 1, crc32(item.body, _CRC_I)) + b"I")
                parts.append(item.body)
                offset += HEADER_SIZE + 1 + len(item.body)
            written.append((at, offset, item))
        try:
            self._write_all(segment.fd, b"".join(parts))
            if self.spool.fsync:
                os.fsync(segment.fd)
        except OSError as exc:
            self._failure = exc
            return 0
        for at, identify in identifies:
            self._identify_objects[(segment.name, at)] = identify
        if segment.window is not None:
            segment.window.extend(written)
            self._window_bytes += offset - start  # counted as on disk: with the headers
            if self._window_bytes > self._max_bytes:
                self._drop_windows()
        segment.end = offset
        segment.unread += count
        segment.unread_bytes += offset - start
        self._live_bytes += offset - start
        return count

    def _drop_windows(self) -> None:
        """Past the memory bound, what is on disk is read back from there: the oldest
        segments' windows are let go (under _io)."""
        for segment in self._segments:
            if self._window_bytes <= self._max_bytes // 2:
                return
            if segment.window:
                self._window_bytes -= sum(end - start for start, end, _ in segment.window)
                segment.window = None

    def _disk_failed(self, items: list[Item], segment: _Segment) -> None:
        """A write failed (a full disk, a directory made read-only, …): what was being
        written goes back in memory, and the client keeps its events there from now on."""
        with self._lock:
            self._in_memory = True
            self._on_disk -= len(items)
            self._pending.extendleft(reversed(items))
            self._pending_bytes += sum(map(len, items))
        with contextlib.suppress(OSError):  # cut what was written of it: the file stays readable
            os.ftruncate(segment.fd, segment.end)
        exc = self._failure
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        logger.error(
            "pug spool: writing to %s failed (%s); the client keeps its events in memory "
            "from now on (they are lost if the process dies); what is on disk is still sent",
            segment.path, reason,
        )  # fmt: skip

    def _rotate(self) -> None:
        """Close the active segment for appending and start a new one (under _io)."""
        old = self._active
        assert old is not None
        try:
            self._active = self._new_segment()
        except OSError as exc:
            logger.warning("pug spool: cannot start a new file: %s", exc.strerror)
            return
        old.sealed = True
        self._delete_if_done(old)

    def _delete_if_done(self, segment: _Segment) -> None:
        if segment.sealed and not segment.unread and not segment.inflight and segment.fd >= 0:
            self._delete(segment)

    def _drop_oldest_on_disk(self) -> None:
        """Past max_bytes: drop the oldest records not taken yet (under _io)."""
        lost: list[Item] = []
        had_overflow = bool(self._overflow)
        excess = self._live_bytes - self.spool.max_bytes
        while excess > 0:
            batch = self._read(1, MAX_REQUEST_BYTES)
            if batch is None:
                break
            items, _, size = batch
            excess -= size
            with self._lock:
                for item in items:
                    self._identifies -= type(item) is not bytes
                    if self._overflow_one(item):
                        lost.append(item)
        if lost:
            self._acknowledge(lost)
            release(lost, False)
        if self._overflow and not had_overflow:
            logger.warning(
                "pug spool: over max_bytes (%d); the oldest events are dropped",
                self.spool.max_bytes,
            )

    # ---- reading back -------------------------------------------------------------------

    def _read(self, count: int, max_size: int) -> tuple[list[Item], bool, int] | None:
        """Take up to `count` records (at most `max_size` bytes of items) from the oldest
        segment with records left, never past an identify (one is taken alone): the items,
        whether it is an identify, and their bytes on disk. They are then in flight until
        acknowledged (under _io)."""
        while True:
            segment = next((s for s in self._segments if s.unread), None)
            if segment is None:
                return None
            taken = self._read_segment(segment, count, max_size)
            if taken[0]:
                return taken
            # Nothing left where records were counted: the file changed under us.
            with self._lock:
                self._on_disk -= segment.unread
            self._live_bytes -= segment.unread_bytes
            segment.unread = segment.unread_bytes = 0

    def _read_segment(
        self, segment: _Segment, count: int, max_size: int
    ) -> tuple[list[Item], bool, int]:
        window = segment.window
        records = iter(window) if window is not None else self._records_on_disk(segment)
        items: list[Item] = []
        size = taken_bytes = 0
        identify = False
        where = self._where
        run = [0, 0, 0]
        at = (segment, run)
        for start, end, item in records:
            if type(item) is not bytes:
                if items:
                    break
                self._identify_objects.pop((segment.name, start), None)
                identify = True
            elif items and size + len(item) > max_size:
                break
            where[id(item)] = at
            items.append(item)
            size += len(item)
            taken_bytes += end - start
            segment.read_at = end
            if identify or len(items) >= count:
                break
        if items:
            run[:] = segment.read_at, taken_bytes, len(items)
            segment.inflight.append(run)
        if window is not None:
            for _ in items:
                window.popleft()
            self._window_bytes -= taken_bytes
        elif segment.read_at >= segment.buf_at + len(segment.buf):
            segment.buf = b""  # read to its end: not held in memory
        segment.unread -= len(items)
        segment.unread_bytes -= taken_bytes
        with self._lock:
            self._on_disk -= len(items)
        return items, identify, taken_bytes

    def _records_on_disk(self, segment: _Segment) -> Iterator[tuple[int, int, Item]]:
        """The data records of `segment` from where it is read, from the file (under _io)."""
        if segment.read_at >= segment.buf_at + len(segment.buf):
            segment.buf = os.pread(segment.fd, segment.end - segment.read_at, segment.read_at)
            segment.buf_at = segment.read_at
        for start, end, kind, body in read_records(
            segment.buf, segment.read_at - segment.buf_at, segment.buf_at
        ):
            if kind == EVENT:
                yield start, end, body
            elif kind == IDENTIFY:
                found = self._identify_objects.get((segment.name, start))
                yield start, end, found if found is not None else QueuedIdentify(body)
            else:  # an acknowledgement; damaged: warned of when the file was adopted
                segment.read_at = end

    def _acknowledge(self, items: list[Item]) -> None:
        """Mark items finished on disk: an `A` record where the finished prefix of a
        segment grew, and the segment deleted once all of it is finished (under _io)."""
        touched: dict[int, _Segment] = {}
        where = self._where
        seen: dict[int, tuple[_Segment, list[int]]] = {}  # one object put twice
        for item in items:
            key = id(item)
            found = where.pop(key, None) or seen.get(key)
            if found is None:
                continue  # held in memory only
            seen[key] = found
            segment, run = found
            run[2] -= 1
            touched[id(segment)] = segment
        for segment in touched.values():
            inflight = segment.inflight
            frontier = segment.frontier
            while inflight and not inflight[0][2]:
                end, size, _ = inflight.popleft()
                frontier = end
                self._live_bytes -= size
            if frontier == segment.frontier or segment.fd < 0:
                continue
            segment.frontier = frontier
            if segment.sealed and not segment.unread and not inflight:
                self._delete(segment)
                continue
            data = record(ACK, _ACK.pack(frontier))
            try:
                self._write_all(segment.fd, data)
            except OSError as exc:
                logger.warning(
                    "pug spool: cannot record delivery in %s (%s): a later process may "
                    "send those events again", segment.path, exc.strerror,
                )  # fmt: skip
            else:
                segment.end += len(data)
                if segment is self._active and segment.end >= self.spool.segment_bytes:
                    self._rotate()

    def _forget(self, items: list[Item]) -> None:
        """Items taken and not delivered at close: left on disk, unacknowledged."""
        for item in items:
            self._where.pop(id(item), None)

    # ---- the worker's side ------------------------------------------------------------

    def next_wake(self, now: float) -> float:
        """Seconds from `now` until the oldest item is due or the directory is looked at."""
        adopt = max(0.0, self._next_adopt - now)
        with self._lock:
            if self._first_at is not None and (self._pending or self._on_disk):
                return min(adopt, max(0.0, self._first_at + self._max_wait - now))
        return min(adopt, self._max_wait)

    def _due(self, now: float) -> bool:
        return (
            self._flush_requested
            or self._identifies > 0
            or len(self._pending) + self._on_disk >= self._batch_size
            or (self._first_at is not None and now - self._first_at >= self._max_wait)
        )

    def take(self, force: bool) -> Taken | None:
        """The next request's items, if due (or `force`), read back from disk (or from
        memory once the disk failed). They stay to be finished."""
        now = _monotonic()
        with self._io:
            if self._released:
                return None
            self._write_pending()
            if now >= self._next_adopt and not self._closed:
                self._adopt(now)
            with self._lock:
                held = len(self._pending) + self._on_disk
                if self._given_up or not held or not (force or self._due(now)):
                    if not held:
                        self._flush_requested = False
                    return None
            read = self._read(BATCH_MAX_EVENTS, MAX_REQUEST_BYTES)
            taken = read[:2] if read is not None else self._take_in_memory()
            if taken is None:
                return None
            items, identify = taken
            with self._lock:
                self._identifies -= identify
                held = len(self._pending) + self._on_disk
                self._first_at = _monotonic() if held else None
            return Taken(items, identify)

    def _take_in_memory(self) -> tuple[list[Item], bool] | None:
        """Once the disk failed: the front run of events that fits one request, or one
        identify, from memory."""
        with self._lock:
            pending = self._pending
            if not pending:
                return None
            if type(pending[0]) is not bytes:
                first = pending.popleft()
                self._pending_bytes -= len(first)
                return [first], True
            items: list[Item] = []
            size = 0
            while pending and len(items) < BATCH_MAX_EVENTS and type(pending[0]) is bytes:
                if items and size + len(pending[0]) > MAX_REQUEST_BYTES:
                    break
                item = pending.popleft()
                size += len(item)
                items.append(item)
            self._pending_bytes -= size
            return items, False

    def take_all(self) -> list[Item]:
        """close() ran out of time: what is only in memory goes to on_error; what is on
        disk stays there for the next process."""
        with self._io:
            self._write_pending()
            with self._lock:
                self._given_up = True
                items = list(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._identifies = 0
                self._first_at = None
        return items

    def finish(
        self,
        items: list[Item],
        *,
        sent: bool,
        already_counted: bool = False,
        dropped: int = 0,
        reasons: Mapping[str, int] | None = None,
        before_release: Callable[[], None] | None = None,
    ) -> None:
        """Account for items that are done (see EventQueue.finish). Once the client is
        closed, items that failed stay on disk for the next process instead of going to
        on_error: the worker gave up on them only because the client is closing."""
        left: list[Item] = []
        if self._closed and not sent and not already_counted:
            left = [item for item in items if id(item) in self._where]
            if left:
                items = [item for item in items if id(item) not in self._where]
        with self._io:
            if left:
                self._forget(left)
            if not self._released:
                self._acknowledge(items)
        with self._lock:
            ready = self._account(
                items, sent=sent, already_counted=already_counted, dropped=dropped,
                reasons=reasons, kept=len(left),
            )  # fmt: skip
            self._left += len(left)
            if left:
                self._given_up = True
        if left:
            logger.warning(
                "pug spool: %d item(s) not delivered before close() stay in %s for the next "
                "client started on it", len(left) + self._on_disk, self.directory,
            )  # fmt: skip
            release(left, False)
        if before_release is not None and (items or not left):
            before_release()
        release(items, sent)
        resolve_waiters(ready)

    # ---- the end ----------------------------------------------------------------------

    def release(self) -> None:
        """After close() and the worker: close the files (what is left in them stays for
        the next process; the locks go with the descriptors)."""
        self._stop_writer()
        with self._io:
            self._write_pending()
            self._released = True
            for segment in list(self._segments):
                segment.sealed = True
                self._delete_if_done(segment)
                if segment.fd >= 0:
                    os.close(segment.fd)
                    segment.fd = -1
                    _HELD.discard(str(segment.path))
            self._segments.clear()

    def abandon_after_fork(self) -> None:
        """In a forked child: the parent's files are the parent's. Close this process's
        copies of their descriptors (the locks stay the parent's: flock locks belong to
        the open file, which the parent still has open)."""
        self._released = True
        for segment in self._segments:
            if segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1
            _HELD.discard(str(segment.path))
