"""The Slurm launcher's contract with srun: task layout, per-rank outcomes, rank 0's result."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from kiln.role_defaults import validation_runtime
from validation.launch.base import HostSpec
from validation.launch.rank import slurm_environment
from validation.launch.slurm import SlurmLauncher, _split_labelled, _task_exit_codes

pytestmark = pytest.mark.unit

RUNTIME = validation_runtime()


def test_srun_asks_for_exactly_the_hosts_with_block_layout_and_a_time_limit():
    launcher = SlurmLauncher("ctl", wall_timeout_s=90, partition="gpu", **RUNTIME)
    hosts = [HostSpec("gpu001", slots=8), HostSpec("gpu002", slots=8)]
    words = shlex.split(
        launcher.srun_command(
            "validation.allreduce", ["-b", "1M"], hosts, {"NCCL_IB_HCA": "mlx5_0"}, "/tmp/r.json"
        )
    )
    assert words[:6] == ["timeout", "--signal=TERM", "--kill-after=10", "90", "srun", "--nodes=2"]
    assert "--ntasks-per-node=8" in words and "--nodelist=gpu001,gpu002" in words
    assert "--distribution=block" in words and "--time=2" in words and "--partition=gpu" in words
    assert "--export=ALL,NCCL_IB_HCA=mlx5_0" in words
    assert words[-4:] == ["--", "validation.allreduce", "-b", "1M"]


def test_uneven_slots_place_each_rank_by_a_hostfile_node_by_node(tmp_path, monkeypatch):
    """Pools with 8 and 4 GPUs in one step: srun (a stand-in on PATH that reports what
    it was given) reads SLURM_HOSTFILE, one line per task in rank order; the file is
    gone afterwards and srun's exit status is the command's."""
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho "file=$SLURM_HOSTFILE"\ncat "$SLURM_HOSTFILE"\necho "args=$*"\nexit 7\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    hosts = [HostSpec("h100-1", slots=3), HostSpec("l40s-1", slots=2)]
    command = SlurmLauncher("ctl", wall_timeout_s=60, **RUNTIME).srun_command(
        "validation.allreduce", [], hosts, {}, "/tmp/r.json"
    )
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert run.returncode == 7, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1:6] == ["h100-1"] * 3 + ["l40s-1"] * 2
    assert "--ntasks=5" in lines[6] and "--distribution=arbitrary" in lines[6]
    assert "--nodelist" not in lines[6]
    assert not Path(lines[0].removeprefix("file=")).exists()


def test_rank_shim_reads_this_nodes_task_count_from_an_uneven_step():
    base = {"SLURM_PROCID": "4", "SLURM_NTASKS": "5", "SLURM_LOCALID": "1", "SLURMD_NODENAME": "b"}
    for node, expected in [("0", "2"), ("1", "2"), ("2", "1")]:
        env = slurm_environment(
            {
                **base,
                "SLURM_STEP_TASKS_PER_NODE": "2(x2),1",
                "SLURM_NODEID": node,
                "MASTER_ADDR": "a",
            }
        )
        assert env["LOCAL_WORLD_SIZE"] == expected, node


def test_labelled_output_is_split_per_rank_and_srun_messages_reach_every_rank():
    text = "0: hello\n1: world\nsrun: error: something about the step\n 1: again\n"
    assert _split_labelled(text, 2) == [
        ["hello", "srun: error: something about the step"],
        ["world", "srun: error: something about the step", "again"],
    ]


def test_task_exit_codes_come_from_srun_error_lines():
    stderr = (
        "srun: error: sc2: task 2: Exited with exit code 3\nsrun: error: sc3: tasks 3-4: Killed\n"
    )
    assert _task_exit_codes(stderr, 5, 3, killed=False) == [0, 0, 3, 137, 137]
    # srun itself failed before any task ran: every rank failed with its status.
    assert _task_exit_codes("srun: error: Unable to allocate resources\n", 2, 1, False) == [1, 1]
    assert _task_exit_codes("", 2, None, killed=True) == [None, None]


def test_rank_shim_maps_srun_task_variables_to_torch_distributed():
    env = slurm_environment(
        {
            "SLURM_PROCID": "3",
            "SLURM_NTASKS": "4",
            "SLURM_LOCALID": "1",
            "SLURMD_NODENAME": "sc2",
            "SLURM_NTASKS_PER_NODE": "2",
            "MASTER_ADDR": "sc1",
        }
    )
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == (
        "3",
        "4",
        "1",
        "2",
    )
    assert env["KILN_HOST_NAME"] == "sc2" and env["MASTER_ADDR"] == "sc1"


def test_rank_shim_outside_srun_says_what_is_missing():
    with pytest.raises(SystemExit, match="not under srun"):
        slurm_environment({"SLURM_PROCID": "0"})


def test_rank_0_result_survives_srun_cutting_lines_and_labels():
    from validation.launch.rank import parse_result_lines, result_lines

    document = {"name": "allreduce", "metrics": {"sizes": [{"busbw_gbps": 1.5}] * 40}}
    lines = result_lines(document)
    assert len(lines) > 2 and all(len(line) < 512 for line in lines)
    labelled = "".join(f"0: {line}\n" for line in lines) + "1: other rank\n"
    assert parse_result_lines(_split_labelled(labelled, 2)[0]) == document
    assert parse_result_lines(_split_labelled(labelled, 2)[0][:-1]) is None  # a piece lost
