"""The validation runtime reaches every node: pinned torch from the wheelhouse, Kiln's suite."""

from __future__ import annotations

import pytest

from kiln.lab.lifecycle import Lab
from tests.conftest import REPO
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host

pytestmark = pytest.mark.lab

PY = "/opt/kiln/venv/bin/python"


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    lab = lab_factory([{"name": "v1"}, {"name": "v2"}], "kv1", "10.77.90.0/24")
    assert_converged(converge(lab, ["validation_runtime"]))
    return lab


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge(lab, ["validation_runtime"]))


def test_every_node_runs_the_pinned_torch_and_this_checkout_of_the_suite(lab: Lab):
    pinned = (REPO / "validation" / "requirements.txt").read_text().split("torch==")[1].split()[0]
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
