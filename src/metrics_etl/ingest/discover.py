"""Discover raw files and open them safely: each file is opened once, as a non-blocking
descriptor, checked to be a regular file, and hashed and read through that descriptor."""

from __future__ import annotations

import errno
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from metrics_etl.contract import STREAMS, SUFFIXES
from metrics_etl.errors import UserError
from metrics_etl.files import sha256_of


@dataclass(frozen=True)
class RawFile:
    """A raw file found under the raw folder."""

    path: Path
    rel: str
    stream: str
    format: str
    size: int
    mtime_ns: int


@dataclass
class Discovery:
    """What the raw folder holds: loadable files and files that were skipped."""

    files: list[RawFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _format_of(name: str) -> str | None:
    """The raw format of a file name, or None when unsupported."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".")
    return None


def _ignored(rel_parts: tuple[str, ...]) -> bool:
    """Paths with a component starting with `_` or `.` are ignored by convention."""
    return any(p.startswith(("_", ".")) for p in rel_parts)


def discover(raw: Path) -> Discovery:
    """Walk the raw folder and classify every entry, opening none of them.

    Symlinks are followed, to files and folders, inside or outside `raw`; a folder reached a
    second time (a symlink loop, or two names for one folder) is read once. An entry that cannot
    be loaded (a dangling symlink, a loop, a FIFO, a device, a file that cannot be read) is
    skipped with its reason; it never stops the run.
    """
    if not raw.exists():
        raise UserError(
            f"raw folder {raw} does not exist; pass --raw DIR or run `metrics-etl generate` first"
        )
    if not raw.is_dir():
        raise UserError(
            f"raw path {raw} is not a folder; pass --raw DIR pointing at the raw folder"
        )
    found = Discovery()
    top = raw.stat()
    folders: dict[tuple[int, int], str] = {(top.st_dev, top.st_ino): "the raw folder"}

    def unlisted(error: OSError) -> None:
        """A folder that cannot be listed is skipped with its reason."""
        rel = Path(error.filename).relative_to(raw).as_posix() if error.filename else "."
        found.skipped.append((_printable(rel + "/"), f"cannot list this folder: {why(error)}"))

    for dirpath, dirnames, filenames in os.walk(raw, onerror=unlisted, followlinks=True):
        dirnames[:] = _folders_to_walk(raw, Path(dirpath), dirnames, folders, found)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel_path = path.relative_to(raw)
            rel = rel_path.as_posix()
            if _ignored(rel_path.parts):
                continue
            st = _misplaced(rel_path) or _regular(path)
            if isinstance(st, str):
                found.skipped.append((_printable(rel), st))
                continue
            found.files.append(
                RawFile(
                    path,
                    rel,
                    rel_path.parts[0],
                    _format_of(name) or "",
                    st.st_size,
                    st.st_mtime_ns,
                )
            )
    return found


def _folders_to_walk(
    raw: Path,
    dirpath: Path,
    dirnames: list[str],
    folders: dict[tuple[int, int], str],
    found: Discovery,
) -> list[str]:
    """The subfolders to walk into, sorted: not ignored, not already walked under another name."""
    keep = []
    for name in sorted(dirnames):
        if name.startswith(("_", ".")):
            continue
        path = dirpath / name
        rel = path.relative_to(raw).as_posix() + "/"
        try:
            st = path.stat()
        except OSError as error:
            found.skipped.append((_printable(rel), why(error, path)))
            continue
        seen = folders.setdefault((st.st_dev, st.st_ino), rel)
        if seen != rel:
            found.skipped.append(
                (_printable(rel), f"symlink to a folder already read as {_printable(seen)}")
            )
            continue
        keep.append(name)
    return keep


def _misplaced(rel_path: Path) -> str | None:
    """Why a file's place or name keeps it from loading, or None."""
    if len(rel_path.parts) == 1:
        return "not inside a stream folder"
    stream = rel_path.parts[0]
    if stream not in STREAMS:
        return f"unknown stream folder '{_printable(stream)}'"
    if _format_of(rel_path.name) is None:
        return "unsupported extension (use .jsonl, .jsonl.gz or .parquet)"
    if _printable(rel_path.as_posix()) != rel_path.as_posix():
        return "its name is not valid UTF-8; rename it"
    return None


# What a file that is not regular is, by the type bits of its mode.
KINDS: dict[int, str] = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
    stat.S_IFDIR: "folder",
}


def _kind(mode: int) -> str:
    """A name for the type of a file that is not regular."""
    return KINDS.get(stat.S_IFMT(mode), "special file")


def _regular(path: Path) -> os.stat_result | str:
    """The stat of a readable regular file (symlinks followed), or why it is not one."""
    try:
        st = path.stat()
    except OSError as error:
        return why(error, path)
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_kind(st.st_mode)})"
    if not os.access(path, os.R_OK):
        return PERMISSION_DENIED
    return st


PERMISSION_DENIED = "permission denied: fix its permissions or move it out of the raw folder"


def why(error: OSError, path: Path | None = None) -> str:
    """The reason, for the run summary, why a raw path could not be read."""
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno in (errno.EACCES, errno.EPERM):
        return PERMISSION_DENIED
    if error.errno == errno.ENOENT:
        if path is not None and path.is_symlink():
            return "dangling symlink (its target does not exist)"
        return "vanished before it was read; it is read by a later run if it comes back"
    return f"cannot read it ({error.strerror or error}); a later run tries again"


def _printable(text: str) -> str:
    """A path as text that can be printed and stored (bytes that are not UTF-8 escaped)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Unreadable(Exception):
    """A raw file that cannot be read in this run (gone, not regular, failing): skipped, retried."""


@dataclass
class Opened:
    """A raw file opened once: every read (hash, load) goes through this descriptor."""

    fd: int
    size: int
    mtime_ns: int
    digest: str = ""
    # the bytes a JSONL file holds (decompressed), and whether they end with a newline; None
    # when not known (a gzip stream that does not inflate whole and checked here)
    content: tuple[int, bool] | None = None


# Where this process's open descriptors have names (DuckDB reads a Parquet file through one).
FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def open_raw(raw_file: RawFile) -> Opened:
    """Open a raw file without blocking and check it is a regular file; raises Unreadable."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(raw_file.path, flags)
    except OSError as error:
        raise Unreadable(why(error, raw_file.path)) from error
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Unreadable(f"not a regular file ({_kind(st.st_mode)})")
    return Opened(fd, st.st_size, st.st_mtime_ns)


def hashed(raw_file: RawFile) -> Opened:
    """Open a raw file and hash its content; the caller closes the descriptor."""
    opened = open_raw(raw_file)
    try:
        if raw_file.format == "jsonl.gz":
            inflated = Inflated()
            opened.digest = sha256_of(inflated.feed(b) for b in pread_blocks(opened.fd, 1 << 20))
            opened.content = inflated.result()
        else:
            opened.digest = sha256_of(pread_blocks(opened.fd, 1 << 20))
            last = os.pread(opened.fd, 1, opened.size - 1) if opened.size else b""
            opened.content = (opened.size, last in (b"", b"\n"))
    except OSError as error:
        os.close(opened.fd)
        raise Unreadable(why(error)) from error
    except BaseException:
        os.close(opened.fd)
        raise
    return opened


class Inflated:
    """The size of a gzip stream's content, checked (CRC and length) as its bytes are fed."""

    def __init__(self) -> None:
        self.inflater = zlib.decompressobj(wbits=31)
        self.size = 0
        self.last = b"\n"
        self.broken = False

    def feed(self, data: bytes) -> bytes:
        """Inflate (and drop) the next compressed bytes; returns them unchanged."""
        if self.broken:
            return data
        try:
            rest = data
            while rest:
                out = self.inflater.decompress(rest)
                if out:
                    self.size += len(out)
                    self.last = out[-1:]
                rest = b""
                if self.inflater.eof:  # a member ended: another may follow
                    rest = self.inflater.unused_data
                    if rest:
                        self.inflater = zlib.decompressobj(wbits=31)
        except zlib.error:
            self.broken = True
        return data

    def result(self) -> tuple[int, bool] | None:
        """(content bytes, ends with a newline), or None unless every member inflated whole."""
        if self.broken or not self.inflater.eof:
            return None
        return self.size, self.last == b"\n"


def pread_blocks(fd: int, block_bytes: int) -> Iterator[bytes]:
    """The bytes of an open file from its start, block_bytes at a time (its offset untouched)."""
    offset = 0
    while data := os.pread(fd, block_bytes, offset):
        offset += len(data)
        yield data


class FdReader:
    """A read-only stream over an open descriptor from its start, for gzip (reads with pread)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes (all the rest when size < 0)."""
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        data = os.pread(self.fd, size, self.offset)
        self.offset += len(data)
        return data


def check_unchanged(raw_file: RawFile, opened: Opened) -> None:
    """Raise Unreadable when a file's size or mtime moved while it was read."""
    st = os.fstat(opened.fd)
    if (st.st_size, st.st_mtime_ns) != (opened.size, opened.mtime_ns):
        raise Unreadable("changed while it was read; a later run reads it again")
