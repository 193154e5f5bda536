"""Look for secret values, in every form they could leak in, through files and output."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path


def forms(secret: bytes, generic: bytes = b"") -> dict[str, bytes]:
    """The ways a leaked secret shows up: raw (and each long line of it), base64, hex, and
    as a JSON string would quote it (a secret inside an event or a result document).

    `generic` is an unrelated secret of the same kind (another key of the same type): a
    needle found in it is format, not secret (every OpenSSH ed25519 key opens with the
    same header and first line), and would report any key file anywhere as a leak."""
    found: dict[str, bytes] = {}
    pieces = [secret.strip()] + [
        line.strip()
        for line in secret.splitlines()
        if len(line.strip()) >= 16 and not line.startswith(b"-----")
    ]
    for i, piece in enumerate(pieces):
        quoted = json.dumps(piece.decode("utf-8", "surrogateescape"))[1:-1]
        encoded = {
            "raw": piece,
            "base64": base64.b64encode(piece),
            "hex": piece.hex().encode(),
            "json": quoted.encode("utf-8", "surrogateescape"),
        }
        for form, text in encoded.items():
            found[f"{form}[{i}]"] = text[:48]
            # The middle too: a whole key's head is format (see `generic`), its middle is not.
            middle = len(text) // 2
            found[f"{form}[{i}] middle"] = text[middle : middle + 48]
    shared = set(forms(generic).values()) if generic else set()
    return {
        name: needle
        for name, needle in found.items()
        if len(needle) >= 12 and needle not in generic and needle not in shared
    }


def files_under(roots: Iterable[Path], skip: Iterable[Path] = ()) -> list[Path]:
    """Every regular file below `roots`, except below the `skip` directories, which are not
    walked at all; a part of a `skip` path may be a glob (`labs/*/nodes`: every lab's disks,
    those of labs booted while the scan runs too)."""
    skipped = [s.resolve() for s in skip]

    def is_skipped(path: Path) -> bool:
        return any(
            len(path.parts) >= len(s.parts) and all(map(fnmatch, path.parts, s.parts))
            for s in skipped
        )

    files = []
    for root in roots:
        if root.is_file() and not root.is_symlink():
            files.append(root)
            continue
        for directory, subdirectories, names in os.walk(root):
            here = Path(directory)
            subdirectories[:] = [d for d in subdirectories if not is_skipped((here / d).resolve())]
            files += [
                here / n for n in names if (here / n).is_file() and not (here / n).is_symlink()
            ]
    return [f for f in files if not is_skipped(f.resolve())]


def leaks(
    secrets: dict[str, bytes],
    files: Iterable[Path],
    texts: dict[str, str],
    generic: dict[str, bytes] | None = None,
) -> list[str]:
    """`<secret> <form> in <where>` for every hit; empty when nothing leaked. `generic`
    maps a secret's name to an unrelated one of its kind (see `forms`)."""
    generic = generic or {}
    needles = {
        f"{name} {form}": n
        for name, s in secrets.items()
        for form, n in forms(s, generic.get(name, b"")).items()
    }
    hits = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # Removed since it was listed: another test's lab, torn down meanwhile (the suite
            # runs two modules at once). A file that is gone holds nothing.
            continue
        hits += [f"{what} in {path}" for what, needle in needles.items() if needle in data]
    for where, text in texts.items():
        data = text.encode("utf-8", "surrogateescape")
        hits += [f"{what} in {where}" for what, needle in needles.items() if needle in data]
    return hits
