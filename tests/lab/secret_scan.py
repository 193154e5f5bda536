"""Look for secret values, in every form they could leak in, through files and output."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path


def forms(secret: bytes) -> dict[str, bytes]:
    """The ways a leaked secret shows up: raw (and each long line of it), base64, hex, and
    as a JSON string would quote it (a secret inside an event or a result document)."""
    found: dict[str, bytes] = {}
    pieces = [secret.strip()] + [
        line.strip()
        for line in secret.splitlines()
        if len(line.strip()) >= 16 and not line.startswith(b"-----")
    ]
    for i, piece in enumerate(pieces):
        found[f"raw[{i}]"] = piece[:48]
        found[f"base64[{i}]"] = base64.b64encode(piece)[:48]
        found[f"hex[{i}]"] = piece.hex().encode()[:48]
        quoted = json.dumps(piece.decode("utf-8", "surrogateescape"))[1:49]
        found[f"json[{i}]"] = quoted.encode("utf-8", "surrogateescape")
    return {name: needle for name, needle in found.items() if len(needle) >= 12}


def files_under(roots: Iterable[Path], skip: Iterable[Path] = ()) -> list[Path]:
    """Every regular file below `roots`, except below the `skip` directories."""
    skipped = [s.resolve() for s in skip]
    files = []
    for root in roots:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else root.rglob("*"):
            resolved = path.resolve()
            if any(resolved.is_relative_to(s) for s in skipped):
                continue
            if path.is_file() and not path.is_symlink():
                files.append(path)
    return files


def leaks(secrets: dict[str, bytes], files: Iterable[Path], texts: dict[str, str]) -> list[str]:
    """`<secret> <form> in <where>` for every hit; empty when nothing leaked."""
    needles = {f"{name} {form}": n for name, s in secrets.items() for form, n in forms(s).items()}
    hits = []
    for path in files:
        data = path.read_bytes()
        hits += [f"{what} in {path}" for what, needle in needles.items() if needle in data]
    for where, text in texts.items():
        data = text.encode("utf-8", "surrogateescape")
        hits += [f"{what} in {where}" for what, needle in needles.items() if needle in data]
    return hits
