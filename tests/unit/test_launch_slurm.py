"""The Slurm launcher's contract with srun: task layout, per-rank outcomes, rank 0's result."""

from __future__ import annotations

import shlex

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


def test_uneven_slots_are_refused():
    with pytest.raises(ValueError, match="same number of slots"):
        SlurmLauncher("ctl", **RUNTIME).srun_command(
            "m", [], [HostSpec("a", slots=1), HostSpec("b", slots=2)], {}, "/tmp/r"
        )


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
