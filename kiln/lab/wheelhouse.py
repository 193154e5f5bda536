"""A directory of wheels for the validation runtime, built on this host for lab nodes.

Nodes must not fetch a multi-GB CUDA torch from PyPI: the host downloads the
pinned requirements once (pip here resolves torch to the local CPU build) and
every node mounts the result read-only and installs from it with --no-index.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import sys
from pathlib import Path

from kiln.errors import KilnError
from kiln.hostcmd import run
from kiln.paths import cache_root

REQUIREMENTS = Path(__file__).resolve().parents[2] / "validation" / "requirements.txt"
NODE_PATH = "/opt/kiln/wheelhouse"
#: Where lab nodes keep the runtime venv pip built (the role's validation_runtime_venv_archives).
ARCHIVES_NODE_PATH = "/opt/kiln/venv-archives"


def ensure_wheelhouse(requirements: Path = REQUIREMENTS) -> tuple[Path, bool]:
    """The wheelhouse for `requirements` (built if missing); returns (path, built)."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    digest = hashlib.sha256(requirements.read_bytes() + tag.encode()).hexdigest()[:12]
    root = cache_root() / "wheelhouse"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{tag}-{digest}"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target, False
        staging = root / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--only-binary=:all:",
                    "-r",
                    str(requirements),
                    "-d",
                    str(staging),
                ],
                timeout=1800,
            )
        except KilnError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise KilnError(f"building the validation wheelhouse failed: {exc}") from None
        (staging / ".complete").write_text(requirements.read_text())
        staging.rename(target)
        return target, True


def venv_archives() -> Path:
    """This host's directory of runtime venv archives, mounted writable into every lab node.

    Every lab on this host boots the same root filesystem, so a venv one node built
    serves the nodes of later labs too; the role names each archive by what it was
    built for (pins, OS release, Python, machine), so a new recipe never reuses one.
    """
    path = cache_root() / "venv-archives"
    path.mkdir(parents=True, exist_ok=True)
    return path
