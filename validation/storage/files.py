"""The files of a run: where they live, writing, reading, dropping them from the cache,
checking DIR first and removing everything after. Plain Python, no collectives.

Layout: ``DIR/.kiln-storage-<run id>/<host>-<rank>/<workload>/<index>.bin``.
The run id is fresh per run, so every file is new: no host has it cached from
an earlier run, and two runs never share files.

Cache avoidance, the part done here (:mod:`.plan` does the rest, by having
every rank read another host's files):

* The writer ``fsync``s each file, then calls ``posix_fadvise(DONTNEED)``:
  once the pages are clean the kernel can drop them. The readers are on other
  hosts anyway; this matters where a host reads its own writes (one host).
* The reader calls ``posix_fadvise(DONTNEED)`` right after ``open``, inside the
  timed region (a local call of microseconds that does not touch the server),
  and not in a pass before it, which would warm the client's attribute cache
  and make small-file opens look cheaper than they are.

Limits: ``fadvise`` is advice, and reaches only the kernel page cache, not a
FUSE daemon's own caches (GlusterFS io-cache, md-cache) or the file server's
memory. The file server has just received the data, so reads may come from its
RAM: the figure covers client, network and server, and covers the server's
disks only when a run writes more than the servers can cache.

Written data is random bytes with a counter in every block, so a compressing
or deduplicating filesystem cannot shrink it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from validation.storage.plan import WorkloadSpec, space_needed

#: Prefix of every run directory under DIR.
RUN_PREFIX = ".kiln-storage-"

#: Free space kept beyond what the run writes: it must never fill a shared
#: filesystem that other jobs are using.
HEADROOM = 0.10

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class IoStats:
    """What one rank wrote or read in one timed phase."""

    files: int
    bytes: int
    seconds: float


class ShortFileError(OSError):
    """A file read back with another size than it was written with."""


def run_dir(root: str | Path, run_id: str) -> Path:
    """The directory of one run under DIR."""
    return Path(root) / f"{RUN_PREFIX}{run_id}"


def rank_dir(run: Path, host: str, rank: int) -> Path:
    """The directory one rank writes into; the host name is made safe for a path."""
    return run / f"{_UNSAFE.sub('_', host) or 'host'}-{rank}"


def workload_paths(directory: Path, spec: WorkloadSpec) -> list[Path]:
    """The files of one workload in one rank's directory, in the order they are read."""
    return [directory / spec.name / f"{i:05d}.bin" for i in range(spec.count)]


def drop_cache(fd: int) -> bool:
    """Ask the kernel to drop the file's cached pages; False where it cannot be asked."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):  # no posix_fadvise (macOS), or refused
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    """Make the new names durable too; some filesystems cannot fsync a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_files(paths: Sequence[Path], size: int, block_size: int) -> IoStats:
    """Write ``size`` bytes to each path (new files), fsync each, drop it from the cache.

    Timed from the first open to the last fsync, the way a job that saves
    checkpoints experiences it. Parent directories are created before timing.
    """
    for parent in dict.fromkeys(p.parent for p in paths):
        parent.mkdir(parents=True, exist_ok=True)
    buf = bytearray(os.urandom(min(block_size, size)))
    view = memoryview(buf)
    stamp = len(buf) >= 16
    written = 0
    start = time.perf_counter()
    for index, path in enumerate(paths):
        with open(path, "xb", buffering=0) as handle:
            left, block = size, 0
            while left:
                n = min(len(buf), left)
                if stamp:  # every block distinct: nothing to compress or deduplicate
                    struct.pack_into("<QQ", buf, 0, index, block)
                done = 0
                while done < n:
                    step = handle.write(view[done:n])
                    if not step:
                        raise OSError(errno.EIO, "write made no progress", str(path))
                    done += step
                left -= n
                block += 1
            os.fsync(handle.fileno())
            drop_cache(handle.fileno())
        written += size
    for parent in dict.fromkeys(p.parent for p in paths):
        _fsync_dir(parent)
    return IoStats(len(paths), written, time.perf_counter() - start)


def read_files(paths: Sequence[Path], size: int, block_size: int) -> IoStats:
    """Read every path to its end in ``block_size`` reads, in order; timed throughout.

    Raises :class:`ShortFileError` when a file does not hold ``size`` bytes.
    """
    buf = bytearray(max(1, block_size))
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    for path in paths:
        got = 0
        with open(path, "rb", buffering=0) as handle:
            drop_cache(handle.fileno())
            while n := handle.readinto(view):
                got += n
        if got != size:
            raise ShortFileError(f"{path}: read {got} bytes, {size} were written")
        total += got
    return IoStats(len(paths), total, time.perf_counter() - start)


def remove_tree(path: Path) -> list[str]:
    """Remove ``path`` and everything under it; what could not be removed, as messages."""
    problems: list[str] = []

    def note(_func: object, name: str, exc_info: tuple) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):  # someone else removed it
            problems.append(f"{name}: {exc_info[1].strerror or exc_info[1]}")

    if path.exists():
        shutil.rmtree(path, onerror=note)
    return problems


def stale_runs(root: str | Path, current: Path | None = None) -> list[Path]:
    """Run directories under DIR other than ``current``: left by runs that were killed
    (or still running). They are never removed automatically."""
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        return sorted(
            Path(e.path)
            for e in entries
            if e.name.startswith(RUN_PREFIX) and (current is None or Path(e.path) != current)
        )
    return []


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def check_target(root: str | Path, specs: Sequence[WorkloadSpec], world_size: int) -> str | None:
    """Why DIR cannot take this run (naming what to fix), or None when it can.

    Checked on every rank: on a node where the shared filesystem is not mounted,
    DIR may be a local directory, or missing.
    """
    path = Path(root)
    if not path.exists():
        return (
            f"{path} does not exist on this node; pass the directory where the shared "
            "filesystem is mounted (the same path on every node)"
        )
    if not path.is_dir():
        return f"{path} is not a directory; pass a directory on the shared filesystem"
    if not os.access(path, os.W_OK | os.X_OK):
        return (
            f"{path} is not writable by uid {os.getuid()}; make it writable for the user "
            "running the benchmark, or pass a directory on the shared filesystem that is"
        )
    try:
        fs = os.statvfs(path)
    except OSError as exc:
        return f"{path}: cannot read its free space ({exc.strerror}); is the mount healthy?"
    need_bytes, need_files = space_needed(specs, world_size, fs.f_frsize)
    free = fs.f_bavail * fs.f_frsize
    want = int(need_bytes * (1 + HEADROOM))
    if free < want:
        return (
            f"{path} has {_gib(free)} free, but this run writes {_gib(need_bytes)} "
            f"({_gib(need_bytes / world_size)} on each of {world_size} ranks) and keeps "
            f"{HEADROOM:.0%} headroom; free space there, or "
            "lower --large-size, --large-count, --small-count or the number of ranks"
        )
    if fs.f_files and fs.f_favail < need_files:
        return (
            f"{path} has {fs.f_favail} free inodes, but this run creates {need_files} files "
            "and directories; free inodes there, or lower --small-count"
        )
    return None
