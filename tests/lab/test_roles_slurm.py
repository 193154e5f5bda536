"""munge and slurm through roles/site.yml on a controller and three computes: jobs run,
failures show.

The lab (`site_lab`, shared with the Prometheus tests) is what `kiln provision`
makes of a stack: sctl (controller) runs slurmctld and the Prometheus server, sc1,
sc2 and sc3 (compute) run slurmd. Tests that stop daemons or rotate the key come
last and put things back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from kiln import secrets
from kiln.lab.lifecycle import Lab
from kiln.paths import state_root
from kiln.role_defaults import validation_runtime
from tests.conftest import REPO
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host, wait_for
from validation.launch import HostSpec, SlurmLauncher

pytestmark = pytest.mark.lab

COMPUTES = ["sc1", "sc2", "sc3"]
SLURM_ROLES = ["munge", "slurm"]


@pytest.fixture(scope="module")
def lab(site_lab: Lab) -> Lab:
    return site_lab


def artifacts_dir(lab: Lab) -> Path:
    """Where kiln.provision keeps ansible-runner's artifacts (the last 10 runs)."""
    return state_root() / "provision" / lab.cluster.name / "artifacts"


def node_states(lab: Lab) -> dict[str, str]:
    out = host(lab, "sctl").check_output("sinfo --noheader --Node --format='%N %t'")
    return dict(line.split() for line in out.splitlines())


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge(lab))


def test_daemons_run_where_the_inventory_says(lab: Lab):
    controller = host(lab, "sctl")
    assert controller.service("slurmctld").is_running
    assert controller.service("slurmctld").is_enabled
    assert not controller.package("slurmd").is_installed, "the controller is no compute node"
    for name in COMPUTES:
        node = host(lab, name)
        assert node.service("slurmd").is_running and node.service("slurmd").is_enabled, name
        assert not node.package("slurmctld").is_installed, name
    for name in ["sctl", *COMPUTES]:
        assert host(lab, name).service("munge").is_running, name


def test_every_host_holds_the_cluster_key_kept_on_this_machine(lab: Lab):
    path = secrets.munge_key_path(lab.cluster.name)
    assert REPO not in path.parents
    assert path.stat().st_mode & 0o777 == 0o400
    assert path.parent.stat().st_mode & 0o777 == 0o700
    local = hashlib.sha256(path.read_bytes()).hexdigest()
    for name in ["sctl", *COMPUTES]:
        key = host(lab, name).file("/etc/munge/munge.key")
        assert (key.sha256sum, key.mode, key.user) == (local, 0o400, "munge"), name


def test_a_credential_made_on_the_controller_is_accepted_on_the_computes(lab: Lab):
    for name in COMPUTES:
        credential = host(lab, "sctl").check_output("munge --no-input")
        decoded = host(lab, name).run(f"echo '{credential}' | unmunge")
        assert decoded.rc == 0, decoded.stderr
        assert "STATUS:          Success (0)" in decoded.stdout


def test_nodes_are_described_from_their_facts(lab: Lab):
    node = host(lab, "sc1")
    cpus = int(node.check_output("nproc"))
    mem_total_mb = int(node.check_output("awk '/^MemTotal/ {print $2}' /proc/meminfo")) // 1024
    shown = host(lab, "sctl").check_output("scontrol show node sc1")
    fields = dict(re.findall(r"(\w+)=(\S+)", shown))
    assert int(fields["CPUTot"]) == cpus
    # Below what slurmd measures (3 % headroom), so the node never drains itself.
    assert int(fields["RealMemory"]) == int(mem_total_mb * 0.97)
    assert fields["Partitions"] == "lab"
    assert fields["NodeAddr"] == next(str(h.address) for h in lab.hosts if h.name == "sc1")


def test_sinfo_shows_every_compute_idle(lab: Lab):
    states = wait_for(
        "sinfo", lambda: node_states(lab), lambda s: s == dict.fromkeys(COMPUTES, "idle"), 60
    )
    assert "sctl" not in states


def test_srun_runs_on_every_compute(lab: Lab):
    result = host(lab, "sctl").run(f"srun --nodes={len(COMPUTES)} --time=1 hostname")
    assert result.rc == 0, result.stderr
    assert sorted(result.stdout.split()) == COMPUTES


@pytest.mark.parametrize("computes", [COMPUTES[:2], COMPUTES])
def test_allreduce_through_srun_on_2_and_3_hosts(lab: Lab, computes: list[str], tmp_path: Path):
    launcher = SlurmLauncher(
        "sctl",
        workdir=tmp_path,
        ssh_config=lab.layout.ssh_config,
        wall_timeout_s=180,
        **validation_runtime(),
    )
    args = ["-b", "4K", "-e", "1M", "-f", "16", "-w", "2", "-n", "5", "--timeout", "30"]
    result = launcher.launch("validation.allreduce", args, [HostSpec(c) for c in computes])
    assert result.ok, result.summary()
    assert result.result is not None, result.summary()
    assert sorted(result.result["environ"]["hostnames"]) == computes
    rows = result.result["metrics"]["sizes"]
    assert all(row["wrong"] == 0 and row["busbw_gbps"] > 0 for row in rows), rows


def test_hosts_with_different_slot_counts_share_one_step_in_rank_order(lab: Lab, tmp_path: Path):
    """Pools with different GPU counts per node certify together: two ranks on sc1 and
    one on sc2, numbered node by node as the other launchers number them."""
    launcher = SlurmLauncher(
        "sctl",
        workdir=tmp_path,
        ssh_config=lab.layout.ssh_config,
        wall_timeout_s=180,
        **validation_runtime(),
    )
    args = ["-b", "4K", "-e", "64K", "-f", "16", "-w", "1", "-n", "3", "--timeout", "30"]
    hosts = [HostSpec("sc1", slots=2), HostSpec("sc2", slots=1)]
    result = launcher.launch("validation.allreduce", args, hosts)
    assert result.ok, result.summary()
    assert result.result is not None, result.summary()
    assert result.result["environ"]["hostnames"] == ["sc1", "sc1", "sc2"]
    rows = result.result["metrics"]["sizes"]
    assert all(row["wrong"] == 0 and row["busbw_gbps"] > 0 for row in rows), rows


def test_bad_settings_fail_before_any_host_changes(lab: Lab):
    result = converge(lab, SLURM_ROLES, extra_vars={"slurm_memory_headroom_percent": 80})
    assert not result.succeeded
    assert any("slurm_memory_headroom_percent must be between 0 and 50" in e for e in result.errors)
    assert {name: h.changed for name, h in result.hosts.items()} == dict.fromkeys(
        ["sctl", *COMPUTES], 0
    )


def test_rotating_the_key_takes_the_explicit_variable(lab: Lab):
    name = lab.cluster.name
    old = hashlib.sha256(secrets.read_munge_key(name)).hexdigest()
    new = hashlib.sha256(secrets.rotate_munge_key(name)).hexdigest()

    refused = converge(lab, ["munge"])
    assert not refused.succeeded
    assert all("kiln provision --replace-munge-key" in e for e in refused.errors), refused.errors
    for node in ["sctl", *COMPUTES]:
        assert host(lab, node).file("/etc/munge/munge.key").sha256sum == old, node

    assert_converged(converge(lab, ["munge"], extra_vars={"munge_rotate_key": True}))
    for node in ["sctl", *COMPUTES]:
        assert host(lab, node).file("/etc/munge/munge.key").sha256sum == new, node
    # Slurm goes on authenticating with the new key.
    result = host(lab, "sctl").run(f"srun --nodes={len(COMPUTES)} --time=1 hostname")
    assert result.rc == 0, result.stderr
    # And a plain run afterwards changes nothing: the new key is now the key.
    assert_idempotent(converge(lab, ["munge"]))


def test_settings_apply_live_and_a_stopped_slurmd_shows_its_node_not_responding(lab: Lab):
    """A shorter SlurmdTimeout takes effect through `scontrol reconfigure` (no daemon
    restarts), and with it slurmctld notices a stopped slurmd within seconds: it pings
    every SlurmdTimeout/3 and marks a node that did not answer "*", one silent for the
    whole timeout "down". (Both in one test: at the default 300 s the ping alone is 100 s.)"""

    def pids() -> dict[str, str]:
        daemons = {"sctl": "slurmctld", "sc1": "slurmd", "sc2": "slurmd"}
        return {
            name: host(lab, name).check_output(f"systemctl show --property=MainPID {daemon}")
            for name, daemon in daemons.items()
        }

    def slurmd_timeout() -> str:
        return host(lab, "sctl").check_output("scontrol show config | grep '^SlurmdTimeout'")

    sc2 = host(lab, "sc2")
    before = pids()
    try:
        assert_converged(converge(lab, SLURM_ROLES, extra_vars={"slurm_slurmd_timeout": 30}))
        assert slurmd_timeout().endswith("= 30 sec")
        assert pids() == before, "scontrol reconfigure must do, not a restart"

        sc2.run_test("systemctl stop slurmd")
        try:
            states = wait_for(
                "sc2 after stopping slurmd",
                lambda: node_states(lab),
                lambda s: s["sc2"].endswith("*") or s["sc2"].startswith("down"),
                90,
            )
            assert states["sc1"] == "idle"
            shown = host(lab, "sctl").check_output("scontrol show node sc2")
            assert "NOT_RESPONDING" in shown or "State=DOWN" in shown, shown
        finally:
            sc2.run_test("systemctl start slurmd")
        # Back by itself once slurmd registers again (ReturnToService=2).
        wait_for("sc2 after restarting slurmd", lambda: node_states(lab)["sc2"], "idle".__eq__, 120)
    finally:
        assert_converged(converge(lab, SLURM_ROLES))
    assert slurmd_timeout().endswith("= 300 sec")


def test_the_munge_key_never_appears_in_runner_artifacts(lab: Lab):
    directory = secrets.secrets_dir(lab.cluster.name)
    keys = [p.read_bytes() for p in directory.iterdir() if p.name.startswith("munge.key")]
    assert len(keys) == 2, "the current key and the one rotated out"
    forbidden = []
    for key in keys:
        text = key.decode("utf-8", "surrogateescape")
        forbidden += [
            key[:24],
            base64.b64encode(key),
            base64.b64encode(key)[:32],
            key.hex().encode(),
            # What a JSON event would hold had the decoded key leaked into one.
            json.dumps(text)[1:40].encode(),
        ]
    artifacts = artifacts_dir(lab)
    # Every run of this module, the first (which installed the key) included.
    assert 2 <= len(list(artifacts.iterdir())) < 10, "runs rotated out of the artifacts"
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert len(files) > 20, f"expected the runs' artifacts under {artifacts}"
    leaks = [str(p) for p in files for needle in forbidden if needle in p.read_bytes()]
    assert leaks == []
