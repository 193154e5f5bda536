"""The validation runtime reaches every node: pinned torch from the wheelhouse, Kiln's suite;
a venv pip built on one node is unpacked by the next."""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.lab import wheelhouse
from kiln.lab.lifecycle import Lab
from tests.conftest import REPO
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host

pytestmark = pytest.mark.lab

PY = "/opt/kiln/venv/bin/python"
UNPACK = "validation_runtime : Unpack the runtime venv from the site's archive"
PIP = "validation_runtime : Install the pinned requirements into the runtime venv"
PUBLISH = "validation_runtime : Publish the runtime venv to the site's archive"


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[Path, dict]]:
    """An archive directory of this module's own (on this host, and as the nodes see it),
    empty at the start: the lab's shared one may already hold a venv from another lab."""
    name = f"test-runtime-{os.getpid()}"
    on_host = wheelhouse.venv_archives() / name
    shutil.rmtree(on_host, ignore_errors=True)
    on_host.mkdir()
    yield on_host, {"validation_runtime_venv_archives": f"{wheelhouse.ARCHIVES_NODE_PATH}/{name}"}
    shutil.rmtree(on_host, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(lab_factory, store) -> Lab:
    lab = lab_factory([{"name": "v1"}, {"name": "v2"}], "kv1", "10.77.90.0/24")
    first = converge(lab, ["validation_runtime"], extra_vars=store[1])
    assert_converged(first)
    # No archive yet: both nodes ran pip, and the venv was kept once, whole.
    for name in ("v1", "v2"):
        assert PIP in first.changes[name] and UNPACK not in first.changes[name], first.changes
    (archive,) = store[0].glob("runtime-*.tar")
    assert tarfile.is_tarfile(archive) and not list(store[0].glob(".*partial"))
    return lab


def _pinned_torch() -> str:
    return (REPO / "validation" / "requirements.txt").read_text().split("torch==")[1].split()[0]


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge(lab, ["validation_runtime"]))


def test_every_node_runs_the_pinned_torch_and_this_checkout_of_the_suite(lab: Lab):
    pinned = _pinned_torch()
    for name in ("v1", "v2"):
        node = host(lab, name)
        version = node.check_output(f"{PY} -c 'import torch; print(torch.__version__)'")
        assert version.split("+")[0] == pinned
        # CPU build from the host's wheelhouse, not a CUDA build from the internet.
        assert node.check_output(f"{PY} -c 'import torch; print(torch.version.cuda)'") == "None"
        local = (REPO / "validation" / "__init__.py").read_text()
        assert node.file("/opt/kiln/validation/__init__.py").content_string == local
        node.run_expect([0], f"cd /opt/kiln && {PY} -c 'import validation'")


def test_an_unpinned_requirement_is_refused_before_anything_changes(lab: Lab):
    result = converge(
        lab, ["validation_runtime"], extra_vars={"validation_runtime_requirements": ["torch>=2"]}
    )
    assert not result.succeeded
    assert any("pinned with ==" in e for e in result.errors), result.errors
    assert all(h.changed == 0 for h in result.hosts.values())


def test_a_file_edited_or_left_behind_on_a_node_is_found_and_put_right(lab: Lab):
    local = (REPO / "validation" / "__init__.py").read_text()
    stale = "/opt/kiln/validation/removed_from_the_suite.py"
    host(lab, "v1").run_expect([0], "echo '# edited by hand' >> /opt/kiln/validation/__init__.py")
    host(lab, "v2").run_expect([0], f"echo 'raise SystemExit(1)' > {stale}")

    check = converge(lab, ["validation_runtime"], check=True)
    assert_converged(check)
    assert sorted(check.changes) == ["v1", "v2"], check.changes
    # Only the package is found out of place: the installed pins still hold.
    assert check.changes == dict.fromkeys(
        ["v1", "v2"], ["validation_runtime : Remove the previous package"]
    )
    assert (
        "# edited by hand"
        in host(lab, "v1").file("/opt/kiln/validation/__init__.py").content_string
    )

    repair = converge(lab, ["validation_runtime"])
    assert_converged(repair)
    assert sorted(n for n, h in repair.hosts.items() if h.changed) == ["v1", "v2"]
    assert host(lab, "v1").file("/opt/kiln/validation/__init__.py").content_string == local
    assert not host(lab, "v2").file(stale).exists
    assert_idempotent(converge(lab, ["validation_runtime"]))


def test_a_node_that_lost_its_venv_unpacks_the_one_another_node_built(lab: Lab, store):
    host(lab, "v2").run_expect([0], "rm -rf /opt/kiln/venv")
    check = converge(lab, ["validation_runtime"], extra_vars=store[1], check=True)
    assert check.changes == {"v2": [PIP]}, check.changes  # check mode names pip's task

    result = converge(lab, ["validation_runtime"], extra_vars=store[1])
    assert_converged(result)
    # Unpacked, not installed: pip never ran, and v1 was left alone.
    assert result.changes == {"v2": [UNPACK]}, result.changes
    node = host(lab, "v2")
    version = node.check_output(f"{PY} -c 'import torch, transformers; print(torch.__version__)'")
    assert version.split("+")[0] == _pinned_torch()
    node.run_expect([0], "/opt/kiln/venv/bin/pip --version")
    assert not node.file("/opt/kiln/venv.partial").exists
    assert_idempotent(converge(lab, ["validation_runtime"], extra_vars=store[1]))


def test_an_archive_that_does_not_unpack_is_replaced_by_a_venv_pip_builds(lab: Lab, store):
    (archive,) = store[0].glob("runtime-*.tar")
    archive.write_bytes(b"cut short\n")
    host(lab, "v2").run_expect([0], "rm -rf /opt/kiln/venv")

    result = converge(lab, ["validation_runtime"], extra_vars=store[1])
    assert_converged(result)
    assert result.changes == {"v2": [PIP, PUBLISH]}, result.changes
    assert tarfile.is_tarfile(archive) and archive.stat().st_size > 100 * 2**20
    version = host(lab, "v2").check_output(f"{PY} -c 'import torch; print(torch.__version__)'")
    assert version.split("+")[0] == _pinned_torch()
    assert_idempotent(converge(lab, ["validation_runtime"], extra_vars=store[1]))


def test_a_venv_cut_short_before_its_pip_command_was_written_is_made_again(lab: Lab):
    """A node that died while `python3 -m venv` ran can keep a venv with the pip package
    and no pip command (ensurepip writes the commands last): the pip module cannot use
    it, so it is removed and made again, whatever runs next."""
    node = host(lab, "v2")
    node.run_expect([0], "rm -rf /opt/kiln/venv && python3 -m venv /opt/kiln/venv")
    node.run_expect([0], "rm /opt/kiln/venv/bin/pip*")
    node.run_expect([0], "/opt/kiln/venv/bin/python -m pip --version")  # the package is there

    # No archives: pip itself must cope with what the dead node left.
    no_archives = {"validation_runtime_venv_archives": ""}
    result = converge(lab, ["validation_runtime"], extra_vars=no_archives)
    assert_converged(result)
    assert result.changes == {
        "v2": ["validation_runtime : Remove a runtime venv left half-made", PIP]
    }, result.changes
    version = node.check_output(f"{PY} -c 'import torch; print(torch.__version__)'")
    assert version.split("+")[0] == _pinned_torch()
    assert_idempotent(converge(lab, ["validation_runtime"], extra_vars=no_archives))
