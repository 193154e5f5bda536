"""The lab's secret scan (tests/lab/secret_scan.py) finds a key however it leaked, and
does not take what every key of its type shares for the key itself: a false alarm on any
other lab's key file would hide a real leak among the noise."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kiln.lab.keys import generate
from tests.lab.secret_scan import files_under, leaks

pytestmark = pytest.mark.unit


def test_a_key_leaked_in_any_form_is_found_and_another_key_is_not(tmp_path: Path) -> None:
    key, other = generate("a").private, generate("b").private
    places = {
        "clear": b"log: " + key,
        "base64": b"x" + base64.b64encode(key) + b"y",
        "hex": key.hex().encode(),
        "json": json.dumps({"event": key.decode()}).encode(),
        "other": other,
    }
    for name, data in places.items():
        (tmp_path / name).write_bytes(data)
    hits = leaks({"key": key}, sorted(tmp_path.iterdir()), {}, {"key": other})
    where = {hit.rsplit("/", 1)[1] for hit in hits}
    assert where == {"clear", "base64", "hex", "json"}, hits


def test_a_leak_in_printed_output_is_found() -> None:
    password = b"correct horse battery staple"
    hits = leaks({"password": password}, [], {"stdout": f"auth {password.decode()} ok"})
    assert hits and all(hit.endswith(" in stdout") for hit in hits)
    assert leaks({"password": password}, [], {"stdout": "auth *** ok"}) == []


def test_every_file_is_scanned_but_the_skipped_stores_and_every_labs_disks(tmp_path: Path) -> None:
    """What the scan leaves out is only what it is told to: a glob part skips every lab's
    disks, and a file removed after it was listed is no error."""
    for relative in (
        "provision/run/stdout",
        "labs/km/nodes/node1/root/etc/munge/munge.key",
        "labs/kg1/nodes/g1/root/opt/venv/lib.py",
        "labs/km/known_hosts",
        "secrets/kiln-km/munge.key",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    found = files_under([tmp_path], skip=[tmp_path / "secrets", tmp_path / "labs" / "*" / "nodes"])
    assert sorted(f.relative_to(tmp_path).as_posix() for f in found) == [
        "labs/km/known_hosts",
        "provision/run/stdout",
    ]
    (tmp_path / "provision/run/stdout").unlink()
    assert leaks({"secret": b"x" * 16}, found, {}) == []
