"""Where a SQLite queue may live: refusing network filesystems, and files that are not
SQLite databases or are shorter than their header says, before anything touches them."""

from __future__ import annotations

import logging
import os

from ...errors import CorruptDatabase, DatabaseUnavailable, NotAQueueDatabase, UnsafeFilesystem

log = logging.getLogger("sqlitejobq")

#: Where the mount table is read from to recognise network filesystems.
MOUNTINFO = "/proc/self/mountinfo"

#: Filesystem types on which SQLite's POSIX locks or shared-memory WAL index are unreliable.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "v9fs",
        "drvfs",
        "fuse.sshfs",
        "sshfs",
        "glusterfs",
        "fuse.glusterfs",
        "ceph",
        "fuse.ceph",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gcsfuse",
        "davfs",
        "fuse.davfs2",
        "osxfs",
        "fuse.grpcfuse",
    }
)


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_database_file(path: str) -> None:
    """Refuse, before anything touches it, a file that is not a SQLite database or that is
    shorter than its own header says (truncated). A missing or empty file is a new queue."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot read database {path}: {exc}") from exc
    if size == 0:
        return
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot read database {path}: {exc}") from exc
    if not header.startswith(_SQLITE_HEADER):
        raise NotAQueueDatabase(
            f"{path} is not a SQLite database (it does not start with the SQLite header); "
            f"point at the queue's own file, or at a new path to create one"
        )
    if len(header) < 100:
        raise CorruptDatabase(
            f"database {path} is truncated: {size} bytes, shorter than its "
            f"header; restore it from a backup"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the page count in the header is valid when its "valid for" counter matches the change
    # counter; with a write-ahead log present, the log may still hold the last pages
    header_valid = header[24:28] == header[92:96]
    wal = _size_or_zero(path + "-wal")
    if header_valid and wal == 0 and pages and size < pages * page_size:
        raise CorruptDatabase(
            f"database {path} is truncated: its header says {pages} pages of {page_size} "
            f"bytes ({pages * page_size} bytes) but the file has {size}; restore it from a "
            f"backup, or recover what is left with: sqlite3 {path} .recover"
        )


def _size_or_zero(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def filesystem_type(path: str, mountinfo: str | None = None) -> str | None:
    """The filesystem type holding ``path`` per the mount table, or None if unknown."""
    try:
        with open(mountinfo or MOUNTINFO, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        left, right = fields[0].split(), fields[1].split()
        if len(left) < 5 or not right:
            continue
        mount_point = _unescape_mount(left[4])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right[0]
    return best_type


def _unescape_mount(text: str) -> str:
    return (
        text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def check_filesystem(path: str, *, allow_network: bool, mountinfo: str | None = None) -> None:
    """Refuse a database on a network filesystem unless the caller opted in."""
    fstype = filesystem_type(os.path.dirname(os.path.realpath(path)) or ".", mountinfo)
    if fstype is None or fstype not in NETWORK_FILESYSTEMS:
        return
    if allow_network:
        log.warning("database %s is on a %s filesystem; SQLite locking may be unsafe", path, fstype)
        return
    raise UnsafeFilesystem(
        f"database {path} is on a {fstype} filesystem, where SQLite's file locks are not "
        f"reliable and jobs could be claimed twice or the file corrupted; put it on a local "
        f"disk, or pass allow_network_filesystem=True if you accept the risk"
    )
