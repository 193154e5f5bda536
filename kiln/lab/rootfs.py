"""The Debian root filesystem every lab node boots: built once, cached by recipe.

The cache key is a hash of the recipe (suite, variant, packages, mirror and
the post-build steps' version), so a changed recipe builds a new rootfs and an
unchanged one is reused across labs, sessions and CI runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from kiln.errors import KilnError, UsageError
from kiln.hostcmd import run
from kiln.paths import cache_root

# What a node needs to be a real host for Ansible, Slurm and torch.distributed:
# systemd as init, sshd, python3 (+ apt bindings for Ansible's apt module).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "iputils-ping",
    "procps",
    "sudo",
    "ca-certificates",
)
# Bump when `_finish` changes what it writes, so caches are rebuilt.
_POST_BUILD_VERSION = 1
_APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the content of a root filesystem."""

    suite: str
    mirror: str
    variant: str = "minbase"
    packages: tuple[str, ...] = PACKAGES
    post_build_version: int = _POST_BUILD_VERSION

    @property
    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.suite}-{digest[:12]}"


def host_mirror() -> str:
    """The Debian mirror this host's own apt uses: known to be reachable from here."""
    for path in _APT_SOURCES:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                uri = line.split()[1]
            elif line.startswith("deb ") and not line.startswith("deb-src"):
                uri = next(w for w in line.split()[1:] if "://" in w)
            else:
                continue
            if "security" not in uri:
                return uri.rstrip("/")
    raise UsageError(
        "no Debian mirror found in this host's apt sources: set kiln:cluster.lab.mirror"
    )


def ensure_rootfs(
    recipe: Recipe, report: Callable[[str], None] = lambda _: None
) -> tuple[Path, bool]:
    """Path of the cached rootfs for `recipe`, building it first if needed.

    Returns (path, built). A lock makes concurrent `lab up`s build it once.
    """
    root = cache_root() / "rootfs"
    root.mkdir(parents=True, exist_ok=True)
    target = root / recipe.key
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".kiln-recipe.json").is_file():
            return target, False
        report(f"building Debian {recipe.suite} root filesystem (cached as {recipe.key})")
        staging = root / f".{recipe.key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            run(
                [
                    "debootstrap",
                    f"--variant={recipe.variant}",
                    f"--include={','.join(recipe.packages)}",
                    recipe.suite,
                    str(staging),
                    recipe.mirror,
                ],
                timeout=1800,
            )
        except KilnError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise KilnError(f"building the lab root filesystem failed: {exc}") from None
        _finish(staging)
        (staging / ".kiln-recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
        staging.rename(target)
        return target, True


def _finish(rootfs: Path) -> None:
    """Make the image node-neutral: each node gets its own identity at boot time."""
    # Host keys and machine-id must differ per node; nodes get theirs on creation.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    # A container has no consoles to log in on; these only fail and degrade boot.
    for unit in ("getty@tty1.service", "console-getty.service"):
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    run(["chroot", str(rootfs), "apt-get", "clean"])
