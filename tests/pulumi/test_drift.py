"""Provisioning drift: a changed role file changes the hash of the plays using it, and only those."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest

from components.mocks import CERTIFICATION_RUN, PLAYBOOK, RecordingMonitor, settled
from tests.pulumi.harness import build, roles_copy, stack_cluster

pytestmark = pytest.mark.pulumi


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _hashes(monitor: RecordingMonitor, prefix: str) -> dict[str, str]:
    """Playbook hashes of one program (resource names without the program's prefix)."""
    return {
        r.name.removeprefix(prefix): r.inputs["hash"]
        for r in monitor.of_type(PLAYBOOK)
        if r.name.startswith(prefix)
    }


@pulumi.runtime.test
def test_changed_role_file_changes_only_the_plays_that_use_it(
    monitor: RecordingMonitor, tmp_path: Path
):
    cluster = stack_cluster("staging")
    same = roles_copy(tmp_path / "same")
    again = roles_copy(tmp_path / "again")
    base_changed = roles_copy(tmp_path / "base")
    _append(base_changed / "base" / "defaults" / "main.yml", "\nbase_extra_setting: true\n")
    # Same stack, three checkouts; one program each (different resource names).
    programs = {
        "a-": build(monitor, cluster, "a", roles_dir=same),
        "b-": build(monitor, cluster, "b", roles_dir=again),
        "c-": build(monitor, cluster, "c", roles_dir=base_changed),
    }

    def check(args):
        provisioning_hashes = args[: len(programs)]
        a, b, c = (_hashes(monitor, prefix) for prefix in programs)
        assert a == b, "an unchanged roles tree (elsewhere on disk) must give the same hashes"
        for run in ("provisioning-ctl", "provisioning-a100"):
            assert a[run] != c[run], f"{run}: base changed but its hash did not"
        for run in ("storage-roles", "monitoring-roles"):
            assert a[run] == c[run], f"{run} does not use base; its hash must not move"
        assert provisioning_hashes[0] == provisioning_hashes[1] != provisioning_hashes[2]
        # ...and certification sees the new hash, so it runs again.
        certified = {
            r.name.split("-", 1)[0]: r.inputs["provisioningHash"]
            for r in monitor.of_type(CERTIFICATION_RUN)
        }
        assert certified["a"] == certified["b"] != certified["c"], certified

    return pulumi.Output.all(
        *[p.provisioning_hash for p in programs.values()], settled(*programs.values())
    ).apply(check)


@pulumi.runtime.test
def test_a_monitoring_role_change_shows_as_monitoring_drift_only(
    monitor: RecordingMonitor, tmp_path: Path
):
    cluster = stack_cluster("lab")
    before = roles_copy(tmp_path / "before")
    after = roles_copy(tmp_path / "after")
    _append(after / "node_exporter" / "defaults" / "main.yml", "\n# scrape faster\n")
    programs = {"a-": build(monitor, cluster, "a", roles_dir=before)}
    programs["c-"] = build(monitor, cluster, "c", roles_dir=after)

    def check(_):
        a, c = (_hashes(monitor, prefix) for prefix in programs)
        assert a["monitoring-roles"] != c["monitoring-roles"], (a, c)
        assert a["provisioning-lab"] == c["provisioning-lab"], (a, c)

    return settled(*programs.values()).apply(check)
