"""Messages layer: large buffers between processes on one host, through shared memory.

A buffer of `THRESHOLD` bytes or more, going to readers on this host, is written once into a
file of the cluster's shared-memory directory (``/dev/shm``); the message carries an empty frame
in its place and, in its signed header, the segment's name and size::

    sender                           /dev/shm                                 each reader
    write(buffer) ──▶ ipc-<cluster>-s<id>.<reader 1> ─┐ (hard links:      ┌─▶ open its own name,
                      ipc-<cluster>-s<id>.<reader 2> ─┤  one file, one    │   mmap MAP_PRIVATE,
                      ...                             ┘  name per reader) ┘   unlink the name

- One name per reader, all links to one file: each reader removes its own name once it has
  mapped the file, so the last reader to map leaves nothing in the directory while the memory
  stays valid for as long as someone maps it. No counter is shared between processes.
- Readers map the file copy-on-write (``MAP_PRIVATE``): arrays arrive writable without a copy;
  a page is copied only when written. N readers of one broadcast share the same pages.
- Files are created 0600 with ``O_EXCL``; their names start with a prefix made from the cluster
  key. Whatever has that prefix is removed when the cluster stops: by its controller, and, for
  a controller killed -9, by ``Cluster.stop_cluster`` and ``ipcluster stop``/``clean`` (a sender
  or reader killed between writing and mapping leaves a name, a killed process its probe,
  behind until then).
- "Same host" is a test, not a name: hostname, boot id, and a probe file that each process keeps
  in the directory while it lives, which the other side must see.
- When the directory lacks room for a buffer, the buffer goes in the message as usual, and the
  process says so once in its log.
- An engine *holds* what it maps: it renames its name to ``ipc-<cluster>-h<token>-<n>`` instead
  of removing it, for as long as the mapping lives. A buffer it sends back that is still such a
  mapping, whole and unwritten (its pages are all the file's: ``/proc/self/pagemap``), goes back
  as new names of the same file (``link(2)``), not as a copy: a pulled array that was pushed
  costs no copy. Held names go with their mapping; those of a killed engine are removed by the
  controller when it removes the engine, and with everything else when the cluster stops.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import itertools
import logging
import mmap
import os
import re
import socket
import threading
import weakref
from pathlib import Path

from ipcluster.errors import SerializationError

log = logging.getLogger("ipcluster.shm")

THRESHOLD = 256 * 1024  # bytes; a smaller buffer costs less in the message than a file
DIRECTORY_VARIABLE = "IPCLUSTER_SHM_DIR"  # where segments live; default /dev/shm
HEADROOM = 16 << 20  # bytes left free in the directory for others (at most 1/8 of it)
PREFIX_LENGTH = len("ipc-") + 12 + 1
_NAME = re.compile(r"ipc-[0-9a-f]{12}-s[0-9a-f]{12}-[0-9a-f]+\Z")
_READER = re.compile(r"[0-9a-f]{12}\Z")


def prefix(key: bytes) -> str:
    """The file-name prefix of one cluster's segments and probes."""
    return f"ipc-{hashlib.sha256(b'ipcluster shared memory ' + key).hexdigest()[:12]}-"


def directory() -> Path:
    return Path(os.environ.get(DIRECTORY_VARIABLE) or "/dev/shm")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def sweep(cluster_prefix: str, where: Path | None = None) -> int:
    """Remove every segment and probe of one cluster (at its stop); returns how many."""
    removed = 0
    try:
        names = os.listdir(where or directory())
    except OSError:
        return 0
    for name in names:
        if name.startswith(cluster_prefix):
            try:
                os.unlink((where or directory()) / name)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def drop_held(key: bytes, identity) -> int:
    """Remove the names held by a process that left the cluster (`identity`: as it registered
    it), if it was on this host; returns how many."""
    if not isinstance(identity, str):
        return 0
    host, boot, token = (identity.split("|") + ["", "", ""])[:3]
    if host != socket.gethostname() or boot != _boot_id() or not _READER.match(token):
        return 0
    return sweep(f"{prefix(key)}h{token}-")


class Host:
    """This process's shared memory for one cluster: its probe, its reader token, and the
    segments it made whose readers may not have mapped them yet."""

    def __init__(self, cluster_prefix: str, where: Path) -> None:
        self.prefix, self.dir = cluster_prefix, where
        self.token = os.urandom(6).hex()  # this process's reader name
        self._probe = where / f"{cluster_prefix}p{self.token}"
        os.close(os.open(self._probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        self.identity = f"{socket.gethostname()}|{_boot_id()}|{self.token}"
        self._same: dict[str, bool] = {}
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._warned = False
        self.fallbacks = 0  # buffers sent in the message for lack of room
        self.hold = False  # keep a name for each mapping while it lives (engines)
        self._held: dict[int, tuple[int, Path]] = {}  # mapping's address -> (size, held name)
        self.relinked = 0  # buffers sent again as the file they came in, not copied

    def close(self) -> None:
        with _lock:
            _hosts.pop(self.prefix, None)
        try:
            os.unlink(self._probe)
        except FileNotFoundError:
            pass

    def reader(self, identity) -> str | None:
        """The reader token of the process whose `identity` this is, if it shares this
        process's host and shared-memory directory; None otherwise."""
        if not isinstance(identity, str):
            return None
        same = self._same.get(identity)
        if same is None:
            host, boot, token = (identity.split("|") + ["", "", ""])[:3]
            same = (host == socket.gethostname() and boot == _boot_id() and bool(_READER.match(token))
                    and (self.dir / f"{self.prefix}p{token}").exists())
            self._same[identity] = same
        return identity.rsplit("|", 1)[1] if same else None

    def place(self, header: dict, buffers, readers: list[str]) -> list:
        """`buffers` as frames: each large one written to a segment with a name per reader,
        and an empty frame in its place; `header["segments"]` lists them. Returns the frames."""
        frames, segments = list(buffers), []
        for i, buffer in enumerate(buffers):
            view = memoryview(buffer).cast("B")
            if view.nbytes < THRESHOLD:
                continue
            base = self._relink(view, readers) if self._held else None
            base = base or self._write(view, readers)
            if base is None:
                continue
            frames[i] = b""
            segments.append([i, view.nbytes, base])
        if segments:
            header["segments"] = segments
        return frames

    def names(self, header: dict, reader: str) -> list[Path]:
        """The names a message's segments have for one reader."""
        return [self.dir / f"{base}.{reader}" for _, _, base in header.get("segments", ())]

    def _write(self, view: memoryview, readers: list[str]) -> str | None:
        base = f"{self.prefix}s{self.token}-{next(self._count):x}"
        first = self.dir / f"{base}.{readers[0]}"
        try:
            st = os.statvfs(self.dir)
            free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            if free - view.nbytes < min(HEADROOM, total // 8):
                raise OSError(errno.ENOSPC, "not enough room")
            fd = os.open(first, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
            try:
                written = 0
                while written < view.nbytes:
                    written += os.write(fd, view[written:written + (1 << 30)])
            finally:
                os.close(fd)
            for reader in readers[1:]:
                os.link(first, self.dir / f"{base}.{reader}")
            return base
        except OSError as exc:
            for reader in readers:
                try:
                    os.unlink(self.dir / f"{base}.{reader}")
                except FileNotFoundError:
                    pass
            self._fall_back(view.nbytes, exc)
            return None

    def keep(self, path: Path, mapping: mmap.mmap) -> None:
        """Hold the file at `path` (a name of it this process owns) while `mapping` lives."""
        held = self.dir / f"{self.prefix}h{self.token}-{next(self._count):x}"
        os.rename(path, held)
        address = _address(mapping)
        with self._lock:
            self._held[address] = (len(mapping), held)
        weakref.finalize(mapping, self._release, address, held)

    def _release(self, address: int, held: Path) -> None:
        with self._lock:
            self._held.pop(address, None)
        try:
            os.unlink(held)
        except FileNotFoundError:
            pass

    def _relink(self, view: memoryview, readers: list[str]) -> str | None:
        """New names, one per reader, of the held file `view` is the whole, unwritten mapping
        of; None if it is not one."""
        try:
            address = _address(view)
        except (TypeError, ValueError):
            return None
        with self._lock:
            size, held = self._held.get(address, (None, None))
        if size != view.nbytes or not _unwritten(address, size):
            return None
        base = f"{self.prefix}s{self.token}-{next(self._count):x}"
        made = []
        try:
            for reader in readers:
                made.append(self.dir / f"{base}.{reader}")
                os.link(held, made[-1])
        except OSError:
            for path in made:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return None
        self.relinked += 1
        return base

    def _fall_back(self, nbytes: int, exc: OSError) -> None:
        self.fallbacks += 1
        with self._lock:
            if self._warned:
                return
            self._warned = True
        log.warning("shared memory in %s has no room for a buffer of %d bytes (%s); large "
                    "buffers go through the sockets instead, which is slower (this is said once; "
                    "give the directory more room, e.g. `docker run --shm-size=8g`, or set %s "
                    "to a larger tmpfs)", self.dir, nbytes, exc.strerror, DIRECTORY_VARIABLE)


class Segment:
    """A received buffer that is in shared memory: its name (for this reader) and size."""

    __slots__ = ("base", "size")

    def __init__(self, base: str, size: int) -> None:
        self.base, self.size = base, size

    def map(self) -> memoryview:
        """A writable copy-on-write mapping of the segment; its name is removed here (or, in
        an engine, becomes a held name for as long as the mapping lives)."""
        host = _hosts.get(self.base[:PREFIX_LENGTH])
        if host is None:
            raise SerializationError(
                f"a buffer came as shared-memory segment {self.base}, but this process has no "
                "shared memory for its cluster; the sender took this host for its own")
        path = host.dir / f"{self.base}.{host.token}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise SerializationError(
                f"shared-memory segment {path} is gone: it was read already (a result fetched "
                "a second time) or removed when its cluster stopped; large results that must "
                "be fetched again need a durable cluster (`ipcluster start --db`)") from None
        try:
            st = os.fstat(fd)
            if st.st_size != self.size or st.st_uid != os.getuid() or st.st_mode & 0o077:
                os.unlink(path)
                raise SerializationError(
                    f"shared-memory segment {path} is not as signed: {st.st_size} bytes, mode "
                    f"{st.st_mode & 0o777:o}, owner {st.st_uid}; expected {self.size} bytes, mode "
                    f"600, owner {os.getuid()}")
            mapping = mmap.mmap(fd, self.size, flags=mmap.MAP_PRIVATE,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                host.keep(path, mapping) if host.hold else os.unlink(path)
            except FileNotFoundError:  # swept meanwhile (the cluster is stopping): mapped all the same
                pass
            return memoryview(mapping)
        finally:
            os.close(fd)


def segments(header: dict, buffers: list) -> list:
    """`buffers` of a received message with its segments as `Segment`s; raises ValueError if
    the header's segment list is malformed."""
    listed = header.get("segments")
    if listed is None:
        return buffers
    if not isinstance(listed, list):
        raise ValueError("'segments' must be a list")
    buffers = list(buffers)
    for entry in listed:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)
                and isinstance(entry[1], int) and isinstance(entry[2], str)
                and 0 <= entry[0] < len(buffers) and entry[1] > 0 and _NAME.match(entry[2])
                and not isinstance(buffers[entry[0]], Segment)
                and len(getattr(buffers[entry[0]], "buffer", buffers[entry[0]])) == 0):
            raise ValueError(f"malformed segment entry {entry!r}")
        buffers[entry[0]] = Segment(entry[2], entry[1])
    return buffers


def _address(buffer) -> int:
    """Where `buffer` (writable) starts in this process's memory."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def _unwritten(address: int, size: int) -> bool:
    """True if no page of a private file mapping was written (copied on write) or swapped
    out: per ``/proc/self/pagemap``, every present page is still the file's."""
    page = mmap.PAGESIZE
    count = (size + page - 1) // page
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(address // page * 8)
            entries = f.read(count * 8)
    except OSError:
        return False
    # the top byte of each (little-endian) entry: bit 63 present, 62 swapped, 61 a file page
    # (a written private page is anonymous); every page must be absent or the file's
    return len(entries) == count * 8 and not entries[7::8].translate(None, _UNWRITTEN)


_UNWRITTEN = bytes(b for b in range(256) if not b & 0x40 and (not b & 0x80 or b & 0x20))


_hosts: dict[str, Host] = {}
_lock = threading.Lock()


def host(key: bytes) -> Host | None:
    """This process's shared memory for the cluster with `key`; None where there is none
    (no such directory, or not writable)."""
    name = prefix(key)
    with _lock:
        found = _hosts.get(name)
        if found is None:
            where = directory()
            try:
                found = _hosts[name] = Host(name, where)
            except OSError as exc:
                log.info("no shared memory in %s (%s); large buffers go through the sockets",
                         where, exc)
                return None
        return found


@atexit.register
def _close_all() -> None:
    for found in list(_hosts.values()):
        found.close()
