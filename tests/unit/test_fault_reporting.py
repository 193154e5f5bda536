"""How faults are reported: a host that died during provisioning, a failed SSH command,
a Slurm step whose node stopped answering, a stack file that is not text.

The real faults are tests/lab/test_faults.py's; here, the logic that turns what
the tools said into one line naming the host, and the bounds that end a run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import kiln.provision
from kiln import ssh
from kiln.certification import launch
from kiln.certification.launch import GroupRunner
from kiln.errors import KilnError
from kiln.inventory import Access
from kiln.provision import one_line, provision
from kiln.ssh import CommandResult, SshTarget
from kiln.stack import ConfigError, load_stack
from tests.conftest import REPO
from tests.unit.test_provision_runs import Runner, ok, static_cluster
from validation.launch.base import HostSpec, LaunchResult, RankOutcome
from validation.launch.slurm import SlurmLauncher
from validation.launch.ssh import SshLauncher

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# -- provisioning ---------------------------------------------------------------------

MITOGEN_EOF = (
    "Task failed: EOF on stream; last 100 lines received:\n"
    "ssh: connect to host 10.1.0.2 port 22: Connection refused\n"
)


def unreachable(host: str, task: str, message: str) -> dict[str, Any]:
    return {
        "event": "runner_on_unreachable",
        "event_data": {"host": host, "task": task, "res": {"msg": message, "unreachable": True}},
    }


def test_a_host_that_died_mid_run_is_named_with_the_reason_and_the_others_finish(
    tmp_path, monkeypatch
):
    runner = Runner(
        [ok("n1", "Install", 1.0, changed=True), unreachable("n2", "Install", MITOGEN_EOF)],
        stats={"ok": {"n1": 9, "n2": 4}, "changed": {"n1": 3}, "dark": {"n2": 1}},
    )
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", runner)
    result = provision(static_cluster(tmp_path))
    assert not result.succeeded
    assert {n: h.status for n, h in result.hosts.items()} == {"n1": "changed", "n2": "unreachable"}
    assert result.failures() == [
        "n2: unreachable: Install: unreachable: Task failed: EOF on stream; last 100 lines "
        "received: … ssh: connect to host 10.1.0.2 port 22: Connection refused"
    ]
    assert result.stopped is None


def test_hosts_the_failure_limit_kept_ansible_from_are_not_run_not_ok(tmp_path, monkeypatch):
    runner = Runner(
        [
            {"event": "runner_on_failed", "event_data": {"host": "n1", "task": "Apt", "res": {}}},
            {"event": "playbook_on_no_hosts_remaining", "event_data": {}},
        ],
        stats={"ok": {"n1": 2}, "failures": {"n1": 1}},
    )
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", runner)
    result = provision(
        static_cluster(tmp_path, provisioning={"batchSize": "1", "maxFailPercentage": 0})
    )
    assert {n: h.status for n, h in result.hosts.items()} == {"n1": "failed", "n2": "not run"}
    assert result.failures() == [
        "n1: failed: Apt: failed: no message",
        "n2: not run: the failure limit stopped the run before this host",
    ]
    assert any("maxFailPercentage" in e for e in result.errors)


def test_a_task_message_becomes_one_line():
    assert one_line("") == "no message"
    assert one_line("  one  \n") == "one"
    assert one_line("first\n\nmiddle\nlast\n") == "first … last"
    assert len(one_line("x" * 1000)) == 300


def test_the_cli_names_the_hosts_that_did_not_finish(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kiln import cli

    runner = Runner(
        [unreachable("n2", "Install", MITOGEN_EOF)],
        stats={"ok": {"n1": 9, "n2": 4}, "changed": {"n1": 3}, "dark": {"n2": 1}},
    )
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", runner)
    cluster = static_cluster(tmp_path)
    monkeypatch.setattr(cli, "_load", lambda stack, stacks_dir, reach=True: cluster)
    run = CliRunner().invoke(cli.app, ["provision", "--stack", "runs"])
    assert run.exit_code == 1
    text = " ".join(run.output.split())
    assert "failed: 1 of 2 host(s) did not finish; the other 1 finished" in text
    assert "n2: unreachable: Install: unreachable:" in text and "Connection refused" in text


# -- SSH commands -----------------------------------------------------------------------


def test_a_failed_command_says_its_exit_and_the_end_of_stderr():
    lines = "".join(f"line {i}\n" for i in range(10))
    assert CommandResult(2, "", lines).describe() == "exit 2: line 7 | line 8 | line 9"
    assert CommandResult(1, "hostname=x\n", "").describe() == (
        "exit 1, nothing on stderr; stdout ends: hostname=x"
    )
    assert CommandResult(127, "", "  \n").describe() == "exit 127, no output"
    assert ssh.tail("x" * 1000, width=50).startswith("…") and len(ssh.tail("x" * 1000, 1, 50)) == 50


class _Stuck:
    """A paramiko client whose command never answers."""

    def exec_command(self, command: str, timeout: float):  # noqa: ANN201
        raise TimeoutError()


def test_a_command_without_answer_is_named_by_its_first_line_not_the_whole_script():
    script = "LC_ALL=C; export LC_ALL\n" + "echo a\n" * 200
    with pytest.raises(KilnError) as stuck:
        ssh.run(_Stuck(), script, timeout=3)  # type: ignore[arg-type]
    message = str(stuck.value)
    assert message == "'LC_ALL=C; export LC_ALL…': no answer within 3 s (TimeoutError)"


def test_the_ssh_launcher_says_why_it_got_no_result_document(tmp_path, monkeypatch):
    launcher = SshLauncher(python=sys.executable, remote_dir=str(tmp_path))
    # The "remote" side: the result file is not there.
    monkeypatch.setattr(launcher, "_ssh", lambda reach, user: ["sh", "-c"])
    slot = SimpleNamespace(host=HostSpec("n1"))
    doc, problem = launcher._read_result(slot, str(tmp_path / "missing" / "r.json"))  # type: ignore[arg-type]
    assert doc is None
    assert "on n1: exit 1: " in problem and "No such file or directory" in problem


# -- certification: a node that stopped answering -----------------------------------------


def test_slurm_stops_waiting_for_a_dead_node_after_the_failure_bound(tmp_path, monkeypatch):
    """srun keeps waiting for a task on a dead node; the launcher ends the step
    `after_failure_s` after srun reported a failed task, cancels its job and reports the
    task it never heard from as killed."""
    launcher = SlurmLauncher(
        "ctl",
        python="python3",
        remote_dir="/opt/kiln",
        wall_timeout_s=60,
        after_failure_s=1,
        workdir=tmp_path,
    )
    commands: list[str] = []

    def login(command: str) -> list[str]:
        commands.append(command)
        if "srun" not in command:
            return ["true"]
        step = (
            "echo '0: python -m validation.allreduce: error: no answer from rank 1 (host n2)' >&2;"
            "echo 'srun: error: n1: task 0: Exited with exit code 3' >&2; sleep 30"
        )
        return ["sh", "-c", step]

    monkeypatch.setattr(launcher, "_login_argv", login)
    started = time.monotonic()
    result = launcher.launch(
        "validation.allreduce", ["--timeout", "5"], [HostSpec("n1"), HostSpec("n2")]
    )
    assert time.monotonic() - started < 15
    assert [r.returncode for r in result.ranks] == [3, None]
    assert result.ranks[0].killed is None
    assert result.ranks[1].killed == "still running 1 s after a task failed"
    assert "no answer from rank 1 (host n2)" in result.ranks[0].stderr_text()
    name = next(w for w in commands[0].split() if w.startswith("--job-name="))
    assert commands[1] == f"scancel --full --name={name.split('=', 1)[1]}"
    assert result.result_error and "rank 0 printed no result document" in result.result_error


def _rank(tmp_path: Path, rank: int, host: str, code: int | None, stderr: str, **kw) -> RankOutcome:
    path = tmp_path / f"rank{rank}.stderr"
    path.write_text(stderr)
    return RankOutcome(rank, host, code, stderr_path=path, **kw)


def test_a_run_that_lost_a_node_names_the_node_that_no_longer_answers(tmp_path, monkeypatch):
    cluster = load_stack("lab", REPO / "stacks")
    names = [h.name for h in cluster.hosts]
    access = Access(
        {n: SshTarget(n, f"10.0.0.{i}", "root", Path("k"), Path("kh")) for i, n in enumerate(names)}
    )
    ranks = [
        _rank(
            tmp_path,
            0,
            "node1",
            3,
            "python -m validation.allreduce: error: no answer from rank 1 (host node2)\n"
            "srun: error: node1: task 0: Exited with exit code 3\n",
        ),
        _rank(tmp_path, 1, "node2", None, "", killed="still running 90 s after a task failed"),
    ]

    class Launcher:
        def __init__(self, *args, **kwargs):
            pass

        def launch(self, module, args, specs):
            return LaunchResult(ranks, None, 1.0, result_error="rank 0 printed nothing")

    class Client:
        def __enter__(self):  # noqa: ANN204
            return self

        def __exit__(self, *args):  # noqa: ANN002, ANN204
            return None

    def connect(target: SshTarget, timeout: float = 10) -> Client:
        if target.name == "node2":  # powered off, or its link cut
            raise KilnError("node2 (10.0.0.2): SSH failed: [Errno 113] No route to host")
        return Client()

    monkeypatch.setattr("validation.launch.SlurmLauncher", Launcher)
    monkeypatch.setattr(ssh, "connect", connect)
    with GroupRunner(cluster, access) as runner:
        outcome = runner.run("validation.allreduce", [], ["node1", "node2"])
    assert outcome.doc is None and outcome.failed_hosts == ["node2", "node1"]
    assert outcome.error == (
        "node2 is unreachable (SSH failed: [Errno 113] No route to host); validation.allreduce "
        "on node1+node2 via slurm failed on node2, node1: python -m validation.allreduce: "
        "error: no answer from rank 1 (host node2)"
    )


def test_a_rank_error_line_is_the_modules_own_not_the_launchers(tmp_path):
    rank = _rank(
        tmp_path, 0, "n1", 3, "python -m validation.x: error: boom\nsrun: Job step aborted\n"
    )
    assert launch._rank_error(rank) == "python -m validation.x: error: boom"
    bare = _rank(tmp_path, 1, "n2", 255, "ssh: connect to host n2 port 22: Connection refused\n")
    assert launch._rank_error(bare) == "ssh: connect to host n2 port 22: Connection refused"


# -- a stack file that is not text --------------------------------------------------------


def test_a_stack_file_of_binary_garbage_is_bad_input(tmp_path):
    (tmp_path / "Pulumi.broken.yaml").write_bytes(b"\x00\xff\xfe\x9c" * 16)
    with pytest.raises(ConfigError) as bad:
        load_stack("broken", tmp_path)
    assert "not UTF-8 text" in str(bad.value) and "Pulumi.broken.yaml" in str(bad.value)
