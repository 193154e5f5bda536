"""The validation suite as one archive for the validation_runtime role to ship to every node.

Copying the package file by file cost one Ansible module round trip per file
on every converge, changed or not (about 28 s of a 81 s no-change run on the
lab). One archive is one checksum per converge, and a changed suite is
unpacked into a clean directory, so a file deleted here is deleted on the
nodes too.

The archive is content-addressed (`validation-<digest>.tar` under the state
root) and byte-for-byte reproducible (sorted members, fixed owner, mode and
time), so the same suite always has the same checksum on the nodes and the
same path in the inventory, whichever checkout or machine built it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from kiln.paths import state_root

VALIDATION_DIR = Path(__file__).resolve().parent.parent / "validation"
REQUIREMENTS = VALIDATION_DIR / "requirements.txt"
# The last member: the package's manifest in `sha256sum` format, paths relative to
# the runtime directory. The role checks the unpacked files against it on every
# converge (one command), so a file edited or lost on a node is put back, and a
# package without it never finished unpacking.
MARKER = "validation/.kiln-bundle"


def bundle_files() -> list[Path]:
    """What is shipped: the package's Python files and its pinned requirements."""
    files = [p for p in VALIDATION_DIR.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted([*files, REQUIREMENTS])


def manifest() -> str:
    """`sha256sum` lines of the shipped files: what `sha256sum --check` verifies on a node."""
    lines = []
    for path in bundle_files():
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{content}  {path.relative_to(VALIDATION_DIR.parent).as_posix()}\n")
    return "".join(lines)


def bundle_digest() -> str:
    """sha256 of the manifest: of every shipped file's path and content."""
    return hashlib.sha256(manifest().encode()).hexdigest()


def bundle_path(digest: str | None = None) -> Path:
    """Where the archive of the suite as it is now lives (it may not be built yet)."""
    return state_root() / "runtime" / f"validation-{(digest or bundle_digest())[:16]}.tar"


def ensure_bundle() -> Path:
    """Build the archive unless it exists; its path."""
    listing = manifest()
    path = bundle_path(hashlib.sha256(listing.encode()).hexdigest())
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as archive:
        directories = sorted(
            {p.parent for p in bundle_files()} | {VALIDATION_DIR},
            key=lambda d: d.relative_to(VALIDATION_DIR.parent).as_posix(),
        )
        for directory in directories:
            archive.addfile(_member(directory.relative_to(VALIDATION_DIR.parent), 0o755, None))
        for file in bundle_files():
            data = file.read_bytes()
            info = _member(file.relative_to(VALIDATION_DIR.parent), 0o644, len(data))
            archive.addfile(info, io.BytesIO(data))
        marker = listing.encode()
        archive.addfile(_member(Path(MARKER), 0o644, len(marker)), io.BytesIO(marker))
    os.replace(partial, path)
    return path


def _member(relative: Path, mode: int, size: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(relative.as_posix())
    info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = (
        mode,
        0,
        0,
        "root",
        "root",
        0,
    )
    if size is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = size
    return info
