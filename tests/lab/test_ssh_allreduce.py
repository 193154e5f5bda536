"""Allreduce across real lab hosts over SSH: sane numbers, and a dead rank is named, never a hang.

On the computes of the site lab (`site_lab`, which has the validation runtime from
roles/site.yml): no lab of its own to boot and provision. The module's name sorts it
after the Slurm and Prometheus modules, so it runs while that lab is up anyway.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kiln.lab.lifecycle import Lab
from kiln.role_defaults import validation_runtime
from tests.lab.conftest import host, wait_until_joined
from validation.launch import HostSpec, SshLauncher

pytestmark = pytest.mark.lab

SMALL = ["-b", "4K", "-e", "1M", "-f", "4", "-w", "2", "-n", "5", "--repeat", "2"]


@pytest.fixture(scope="module")
def lab(site_lab: Lab) -> Lab:
    return site_lab


def _hosts(lab: Lab, names: list[str]) -> list[HostSpec]:
    by_name = {h.name: h for h in lab.hosts}
    # The lab nodes' only interface is eth0; production stacks name theirs.
    env = {"GLOO_SOCKET_IFNAME": "eth0"}
    return [HostSpec(n, str(by_name[n].address), env=env) for n in names]


def _launcher(lab: Lab, workdir: Path, **bounds) -> SshLauncher:
    # The ranks' outputs go under the test's own directory, which pytest removes.
    return SshLauncher(
        ssh_config=lab.layout.ssh_config,
        wall_timeout_s=180,
        workdir=workdir,
        **bounds,
        **validation_runtime(),
    )


@pytest.mark.parametrize("names", [["sc1", "sc2"], ["sc1", "sc2", "sc3"]])
def test_allreduce_over_ssh_gives_correct_sums_and_positive_bandwidth(
    lab: Lab, names, tmp_path: Path
):
    result = _launcher(lab, tmp_path).launch(
        "validation.allreduce",
        [*SMALL, "--dtype", "float32,bfloat16", "--timeout", "30"],
        _hosts(lab, names),
    )
    assert result.ok, result.summary()
    doc = result.result
    assert doc is not None, result.summary()
    assert doc["environ"]["world_size"] == len(names)
    assert sorted(doc["environ"]["hostnames"]) == sorted(names)
    rows = doc["metrics"]["sizes"]
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    assert all(r["wrong"] == 0 for r in rows), rows
    assert all(r["busbw_gbps"] > 0 for r in rows)
    factor = 2 * (len(names) - 1) / len(names)
    for r in rows:
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * factor)


def test_a_rank_killed_mid_run_is_named_by_the_others_within_the_timeout(lab: Lab, tmp_path: Path):
    """Kill rank 2's process on sc3 for real while it runs; sc1 and sc2 must say so."""
    timeout = 8
    args = [
        "-b",
        "64M",
        "-e",
        "64M",
        "-w",
        "1",
        "-n",
        "200",
        "--repeat",
        "5",
        "--check",
        "0",
        "--timeout",
        str(timeout),
    ]
    sc3 = host(lab, "sc3")

    def kill_rank_on_sc3() -> None:
        # Past torch's import and the rendezvous: the collectives are running.
        wait_until_joined(sc3, 3, "validation.allreduce")
        # The module's process, not the shim: the rank dies, its host stays up.
        sc3.run("pkill -KILL -f 'm validation.allreduce'")

    killer = threading.Thread(target=kill_rank_on_sc3)
    killer.start()
    started = time.monotonic()
    result = _launcher(lab, tmp_path, after_failure_s=timeout + 30).launch(
        "validation.allreduce", args, _hosts(lab, ["sc1", "sc2", "sc3"])
    )
    killer.join()
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.unfinished_ranks == [], "survivors must end on their own, not be killed"
    for rank in (0, 1):
        line = result.ranks[rank].last_error_line()
        assert "rank 2 (host sc3)" in line, result.summary()
    assert elapsed < 120, f"took {elapsed:.0f} s: bounded by the timeout, not by luck"
