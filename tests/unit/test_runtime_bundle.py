"""The validation suite's archive: reproducible, content-addressed, complete, marker last."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

import kiln.runtime_bundle as bundle

pytestmark = pytest.mark.unit


@pytest.fixture
def suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small stand-in for validation/ (so the test can edit it), state in tmp."""
    root = tmp_path / "src" / "validation"
    (root / "allreduce").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "allreduce" / "cli.py").write_text("print('hi')\n")
    (root / "requirements.txt").write_text("torch==2.13.0\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    monkeypatch.setattr(bundle, "VALIDATION_DIR", root)
    monkeypatch.setattr(bundle, "REQUIREMENTS", root / "requirements.txt")
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return root


def test_the_archive_holds_the_package_and_its_requirements_and_ends_with_the_marker(suite):
    with tarfile.open(bundle.ensure_bundle()) as archive:
        names = archive.getnames()
        marker = archive.extractfile(bundle.MARKER).read().decode()
    assert names[-1] == bundle.MARKER
    assert set(names) == {
        "validation",
        "validation/allreduce",
        "validation/__init__.py",
        "validation/allreduce/cli.py",
        "validation/requirements.txt",
        bundle.MARKER,
    }
    # The manifest lists every shipped file but itself, as `sha256sum --check` reads it.
    listed = [line.split("  ", 1)[1] for line in marker.splitlines()]
    assert listed == sorted(n for n in names if not archive_dir(n) and n != bundle.MARKER)
    assert marker == bundle.manifest()


def archive_dir(name: str) -> bool:
    return name in ("validation", "validation/allreduce")


def test_the_same_suite_gives_the_same_bytes_and_path(suite, tmp_path):
    first = bundle.ensure_bundle()
    content = first.read_bytes()
    first.unlink()
    (suite / "allreduce" / "cli.py").touch()  # a new mtime is no new content
    again = bundle.ensure_bundle()
    assert again == first and again.read_bytes() == content


def test_an_edited_or_deleted_file_gives_another_archive(suite):
    before = bundle.ensure_bundle()
    (suite / "allreduce" / "cli.py").write_text("print('changed')\n")
    edited = bundle.ensure_bundle()
    assert edited != before
    (suite / "allreduce" / "cli.py").unlink()
    assert bundle.ensure_bundle() not in (before, edited)


def test_the_inventory_names_the_archive_of_the_suite_as_it_is():
    from kiln.inventory import runtime_vars

    assert runtime_vars()["validation_runtime_archive"] == str(bundle.bundle_path())
    assert "torch==2.13.0" in runtime_vars()["validation_runtime_requirements"]
