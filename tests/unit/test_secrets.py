"""Cluster secrets on this machine: the munge key is made once, kept private, rotated on purpose."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from kiln import secrets
from kiln.errors import KilnError
from kiln.stack import cluster_from_document
from tests.conftest import REPO

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _cluster(scheduler: str = "slurm"):
    pool = {"name": "p", "provider": "lab", "hosts": [{"name": "n1"}]}
    config: dict = {"kiln:cluster": {"name": "c1", "nodePools": [pool], "scheduler": scheduler}}
    if scheduler == "kubernetes":
        config["kiln:kubeconfig"] = {"secure": "v1:placeholder"}
    return cluster_from_document({"config": config}, "test")


def test_key_is_generated_once_and_read_back_unchanged(state_dir: Path):
    first = secrets.ensure_munge_key("c1")
    assert len(first) == secrets.MUNGE_KEY_BYTES
    assert secrets.ensure_munge_key("c1") == first
    assert secrets.ensure_munge_key("c2") != first, "each cluster has its own key"


def test_key_file_is_private_and_outside_the_repository(state_dir: Path):
    secrets.ensure_munge_key("c1")
    path = secrets.munge_key_path("c1")
    assert path == state_dir / "secrets" / "c1" / "munge.key"
    assert REPO not in path.resolve().parents
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "secrets").stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["munge.key"], "no partial files left"


def test_provision_vars_carry_the_key_as_base64_for_slurm_clusters_only():
    variables = secrets.provision_vars(_cluster())
    assert base64.b64decode(variables["munge_key_b64"]) == secrets.read_munge_key("c1")
    assert secrets.provision_vars(_cluster()) == variables
    assert secrets.provision_vars(_cluster("kubernetes")) == {}


def test_a_caller_bringing_the_key_makes_no_key_file_here():
    assert secrets.provision_vars(_cluster(), {"munge_key_b64": "from-stack-state"}) == {}
    assert not secrets.munge_key_path("c1").exists()


def test_rotation_makes_a_new_key_and_keeps_the_old_one():
    old = secrets.ensure_munge_key("c1")
    new = secrets.rotate_munge_key("c1")
    assert new != old and secrets.read_munge_key("c1") == new
    kept = [p for p in secrets.secrets_dir("c1").iterdir() if p.name.endswith(".old")]
    assert [p.read_bytes() for p in kept] == [old]
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o400


def test_a_missing_key_is_an_error_on_read_never_a_silent_new_key():
    with pytest.raises(KilnError, match="no munge key for cluster c1"):
        secrets.read_munge_key("c1")


def test_a_key_others_can_read_is_refused():
    secrets.ensure_munge_key("c1")
    path = secrets.munge_key_path("c1")
    path.chmod(0o644)
    with pytest.raises(KilnError, match="readable by other users"):
        secrets.read_munge_key("c1")
