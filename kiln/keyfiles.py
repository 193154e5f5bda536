"""Secrets that tools read only from files, written privately for the length of one call.

ansible, OpenSSH and paramiko take an SSH key or known_hosts as a *path*, but
`pulumi up` holds the key as a secret value. These helpers put such values in
a private temporary directory (0700, files 0600) that is removed when the
call ends, and give back the stack config with those paths filled in.

The config itself travels without its secrets (`kiln.cluster_spec`); the
secrets travel separately, as Pulumi secrets, and meet it here.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from kiln.cluster_spec import cluster_from_spec
from kiln.config import DEFAULT_KNOWN_HOSTS, Cluster
from kiln.errors import UsageError

# known_hosts entries start with a host pattern and carry a key type: a value
# holding one of these is the lines themselves, not a file name.
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")


def private_keys(cluster: Cluster) -> dict[str, str]:
    """Each static pool's SSH private key (pool name -> key text), for Pulumi secrets.

    Raises when a key is still Pulumi ciphertext: only the engine decrypts it,
    so seeing `{secure: ...}` here means the program did not run under Pulumi.
    """
    keys = {}
    for pool in cluster.node_pools:
        key = pool.ssh.private_key
        if pool.provider != "static" or key is None:
            continue
        if not isinstance(key, SecretStr):
            raise UsageError(
                f"pool {pool.name}: ssh.privateKey is still encrypted; it is decrypted only "
                "when the program runs under `pulumi up` / `pulumi preview`"
            )
        keys[pool.name] = key.get_secret_value()
    return keys


@contextmanager
def private_dir() -> Iterator[Path]:
    """A directory only this user can read, removed with everything in it afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="kiln-secrets-"))  # mkdtemp makes it 0700
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def write_private(directory: Path, name: str, content: str) -> Path:
    """Write `content` to `directory/name`, readable by its owner only (ssh insists)."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        # OpenSSH refuses a PEM key whose last line has no newline.
        handle.write(content if content.endswith("\n") else content + "\n")
    return path


def replace_private(path: Path, text: str) -> None:
    """Make `path` hold `text`, readable by its owner only (file 0600, new directories
    0700), replaced atomically and only when it differs: every tool of a run reads the
    same file, and a reader never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.is_file() and path.read_text() == text:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def is_known_hosts_lines(value: str) -> bool:
    """True when a `knownHosts` setting holds entries rather than a file name."""
    return any(f" {kind}" in value for kind in _KEY_TYPES)


def known_hosts_path(value: str | None, directory: Path, name: str) -> Path:
    """A file to verify host keys against: the named file, or the given lines written out."""
    if value and is_known_hosts_lines(value):
        return write_private(directory, name, value)
    return Path(value or DEFAULT_KNOWN_HOSTS).expanduser()


@contextmanager
def cluster_with_key_files(
    spec: str | Mapping[str, Any], keys: Mapping[str, str]
) -> Iterator[Cluster]:
    """The cluster of `spec`, each static pool's key and known_hosts in private files.

    The result is a normal config model: `kiln.provision.provision` and
    `kiln.inventory` use it exactly as they use a stack file read by the CLI.
    """
    with private_dir() as directory:
        document = json.loads(spec) if isinstance(spec, str) else copy.deepcopy(dict(spec))
        for pool in document.get("nodePools", []):
            if pool.get("provider") != "static":
                continue
            ssh = pool.setdefault("ssh", {})
            name = pool["name"]
            if name in keys:
                ssh["privateKeyPath"] = str(write_private(directory, f"{name}.key", keys[name]))
            ssh["knownHosts"] = str(
                known_hosts_path(ssh.get("knownHosts"), directory, f"{name}.known_hosts")
            )
        yield cluster_from_spec(document)
