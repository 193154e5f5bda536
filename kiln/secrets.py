"""Cluster secrets kept on this machine: the munge key, generated once per cluster.

Slurm authenticates every message with munge, and munge needs the same key on
every node. Kiln makes that key the first time a cluster is provisioned and
keeps it outside the repository, at `<state root>/secrets/<cluster>/munge.key`
(file 0400, directory 0700), so that a checkout, a CI log or a bug report never
holds it. Every later run reads the same key back: re-running never changes it.

The key reaches Ansible only as an extra var (`munge_key_b64`): ansible-runner
writes extra vars into its private run directory (0700, removed after the run),
not into the artifacts, and the munge role handles it with `no_log`.

Rotation is deliberate, never a side effect: `rotate_munge_key()` keeps the old
key next to the new one, and the next provisioning run must say
`munge_rotate_key: true`; without it the munge role refuses to replace a key it
wrote before.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from kiln import monitoring_web, redact
from kiln.config import Cluster
from kiln.errors import KilnError
from kiln.keyfiles import replace_private
from kiln.paths import state_root

# What `mungekey --create` writes by default (1024 bits); munged refuses < 32 bytes.
MUNGE_KEY_BYTES = 128
_MUNGE_KEY_MIN_BYTES = 32


def secrets_dir(cluster_name: str) -> Path:
    """This machine's secrets for one cluster."""
    return state_root() / "secrets" / cluster_name


def munge_key_path(cluster_name: str) -> Path:
    return secrets_dir(cluster_name) / "munge.key"


def ensure_munge_key(cluster_name: str) -> bytes:
    """The cluster's munge key: read back if it exists, else generated once and stored."""
    path = munge_key_path(cluster_name)
    if not path.exists():
        _write_new_key(path, os.urandom(MUNGE_KEY_BYTES))
    return read_munge_key(cluster_name)


def read_munge_key(cluster_name: str) -> bytes:
    """The stored key; an error (never a new key) when it is missing or unusable."""
    path = munge_key_path(cluster_name)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise KilnError(f"no munge key for cluster {cluster_name} at {path}") from None
    if len(key) < _MUNGE_KEY_MIN_BYTES:
        raise KilnError(f"{path}: a munge key needs at least {_MUNGE_KEY_MIN_BYTES} bytes")
    if path.stat().st_mode & 0o077:
        raise KilnError(f"{path} is readable by other users: chmod 0400 it (and rotate it)")
    redact.register(key)
    return key


def rotate_munge_key(cluster_name: str) -> bytes:
    """Replace the cluster's key with a new one; the old one stays beside it.

    `kiln provision --rotate-munge-key` calls this, then provisions with
    `munge_rotate_key: true`: nodes holding the old key are only overwritten
    when that variable says so.
    """
    path = munge_key_path(cluster_name)
    if path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = path.with_name(f"munge.key.{stamp}.old")
        # link() never replaces: a second rotation within the same second keeps both.
        for n in range(1, 100):
            try:
                os.link(path, kept)
                break
            except FileExistsError:
                kept = path.with_name(f"munge.key.{stamp}-{n}.old")
        else:
            raise KilnError(f"cannot keep the old munge key next to {path}")
        path.unlink()
    _write_new_key(path, os.urandom(MUNGE_KEY_BYTES))
    return read_munge_key(cluster_name)


def ssh_key_file(cluster_name: str, pool_name: str, key: SecretStr) -> Path:
    """A pool's SSH key given as a clear value, as the file ssh and Ansible need.

    Kept in the cluster's secret store (file 0600, directory 0700), rewritten only
    when the value changes, so every tool of a run reads the same file.
    """
    path = secrets_dir(cluster_name) / "ssh" / f"{pool_name}.key"
    text = key.get_secret_value()
    text = text if text.endswith("\n") else text + "\n"
    # The store's directories are 0700 even where an older run made them otherwise.
    for directory in (path.parent.parent.parent, path.parent.parent, path.parent):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
    replace_private(path, text)
    return path


def provision_vars(cluster: Cluster, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Secret extra vars for provisioning `cluster` that `given` lacks (made if missing here).

    A caller that brings the key (the Pulumi program, from stack state) gets
    nothing, and no key file appears on a machine that never needed one. The
    monitoring's basic auth and TLS travel the same way (`kiln.monitoring_web`).
    """
    variables = monitoring_web.provision_vars(cluster, given)
    if cluster.scheduler != "slurm" or "munge_key_b64" in (given or {}):
        return variables
    key = ensure_munge_key(cluster.name)
    return {**variables, "munge_key_b64": base64.b64encode(key).decode("ascii")}


def _write_new_key(path: Path, key: bytes) -> None:
    """Create `path` holding `key`, mode 0400 from the first byte, never replacing a file."""
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another run created the key meanwhile: theirs wins, and
        # both runs then read the same key back.
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)
