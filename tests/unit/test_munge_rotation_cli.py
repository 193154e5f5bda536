"""`kiln provision --rotate-munge-key` and `--replace-munge-key`: the only ways the munge
role replaces a key it installed (tests/lab/test_roles_slurm.py shows the role's side on
real hosts). A rotation makes the new key here, keeps the old one, and goes to every
host; every refusal comes before anything changes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import kiln.converge_record
from kiln import cli, secrets
from kiln.stack import cluster_from_document

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def slurm_cluster(tmp_path: Path, scheduler: str = "slurm"):
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key")
    config: dict[str, Any] = {
        "kiln:cluster": {
            "name": "rot",
            "scheduler": scheduler,
            "nodePools": [
                {
                    "name": "p",
                    "provider": "static",
                    "ssh": {"privateKeyPath": str(key)},
                    "hosts": [
                        {"name": "c1", "address": "10.1.0.1", "roles": ["controller"]},
                        {"name": "n1", "address": "10.1.0.2", "roles": ["compute"]},
                    ],
                }
            ],
        }
    }
    if scheduler == "kubernetes":
        config["kiln:kubeconfig"] = {"secure": "v1:placeholder"}
    return cluster_from_document({"config": config}, "rot")


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the CLI asked to provision; each run succeeds, changing nothing."""
    calls: list[dict[str, Any]] = []

    def provision_and_record(cluster, hosts, **kwargs):  # noqa: ANN001, ANN202
        calls.append({"hosts": hosts, **kwargs})
        return SimpleNamespace(
            hosts={}, diffs=[], changes={}, errors=[], succeeded=True, changed=0, check=False
        )

    monkeypatch.setattr(kiln.converge_record, "provision_and_record", provision_and_record)
    monkeypatch.setattr(cli, "provision_table", lambda result: "")
    return calls


def invoke(monkeypatch, cluster, *args: str):  # noqa: ANN001, ANN201
    monkeypatch.setattr(cli, "_load", lambda stack, stacks_dir, reach=True: cluster)
    return CliRunner().invoke(cli.app, ["provision", "--stack", "rot", *args])


def test_a_rotation_makes_a_new_key_keeps_the_old_and_installs_it_everywhere(
    tmp_path, monkeypatch, runs
):
    old = secrets.ensure_munge_key("rot")
    run = invoke(monkeypatch, slurm_cluster(tmp_path), "--rotate-munge-key")
    assert run.exit_code == 0, run.output
    new = secrets.read_munge_key("rot")
    assert new != old and len(new) == len(old)
    kept = [p for p in secrets.secrets_dir("rot").iterdir() if p.name.endswith(".old")]
    assert [p.read_bytes() for p in kept] == [old]
    assert runs == [
        {
            "hosts": None,
            "on_event": runs[0]["on_event"],
            "check": False,
            "diff": False,
            "extra_vars": {"munge_rotate_key": True},
        }
    ]
    assert "new munge key for cluster rot" in run.output


def test_replacing_installs_the_current_key_and_makes_none(tmp_path, monkeypatch, runs):
    old = secrets.ensure_munge_key("rot")
    run = invoke(monkeypatch, slurm_cluster(tmp_path), "--replace-munge-key", "--limit", "n1")
    assert run.exit_code == 0, run.output
    assert secrets.read_munge_key("rot") == old
    assert runs[0]["hosts"] == ["n1"] and runs[0]["extra_vars"] == {"munge_rotate_key": True}


def test_a_plain_run_never_lets_the_role_replace_a_key(tmp_path, monkeypatch, runs):
    assert invoke(monkeypatch, slurm_cluster(tmp_path)).exit_code == 0
    assert runs[0]["extra_vars"] is None


@pytest.mark.parametrize(
    ("args", "scheduler", "message"),
    [
        (["--rotate-munge-key", "--limit", "n1"], "slurm", "goes to every host: drop --limit"),
        (["--rotate-munge-key", "--check"], "slurm", "it cannot run with --check"),
        (["--rotate-munge-key", "--replace-munge-key"], "slurm", "drop --replace-munge-key"),
        (["--rotate-munge-key"], "kubernetes", "runs no Slurm, so it has no munge key"),
        (["--replace-munge-key"], "kubernetes", "runs no Slurm, so it has no munge key"),
    ],
)
def test_impossible_requests_exit_2_and_change_nothing(
    tmp_path, monkeypatch, runs, args, scheduler, message
):
    old = secrets.ensure_munge_key("rot")
    run = invoke(monkeypatch, slurm_cluster(tmp_path, scheduler), *args)
    assert run.exit_code == 2, run.output
    assert message in " ".join(run.output.split())
    assert runs == []
    assert secrets.read_munge_key("rot") == old
    assert [p.name for p in secrets.secrets_dir("rot").iterdir()] == ["munge.key"]
