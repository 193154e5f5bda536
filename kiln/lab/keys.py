"""SSH identities of a lab: one client key per lab, one host key per node.

Host keys are generated here rather than by the nodes so that Kiln knows them
before first contact and can verify every connection (no trust-on-first-use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key in OpenSSH formats."""

    private: bytes
    public: str  # "ssh-ed25519 AAAA..."


def generate(comment: str) -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(private=private, public=f"{public} {comment}")


def write_key_pair(path: Path, pair: KeyPair) -> None:
    """Write a private key readable by its owner only (sshd and paramiko insist)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pair.private)
    path.with_suffix(".pub").write_text(pair.public + "\n")


def ensure_client_key(path: Path, lab_id: str) -> str:
    """The lab's client key (created once); returns its public line."""
    if not path.is_file():
        write_key_pair(path, generate(f"kiln-lab-{lab_id}"))
    return path.with_suffix(".pub").read_text().strip()
