"""Faults on real lab machines: a node killed mid-provision and mid-certification, a cut
link, a full report disk, a stack file corrupted between two runs.

One lab (a controller and two computes) for the whole module: the first test's
provisioning, cut short by a killed node and then finished by `kiln lab up`, is
the converge every later test works on. Each test asserts the documented
behaviour (exit code, the node named, a wall-clock ceiling where it proves "no
hang") and that nothing already recorded is lost: the converge record, the
munge key and an earlier certification report stay byte for byte as they were.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln import converge_record, secrets
from kiln.lab import node
from kiln.lab.layout import NodePaths
from kiln.lab.lifecycle import Lab
from kiln.paths import state_root
from kiln.stack import stack_file
from tests.conftest import REPO, kiln_cli
from tests.lab.conftest import host, wait_for, wait_until_joined

pytestmark = pytest.mark.lab

LAB_ID = "kf1"
SUBNET = "10.77.88.0/24"
HOSTS = [{"name": "fctl", "roles": ["controller"]}, {"name": "f1"}, {"name": "f2"}]
#: kiln:cluster.certification.timeoutSeconds of the test stack.
TIMEOUT_S = 20
# Long enough that a healthy sweep runs for minutes, so a fault lands mid-run.
SLOW_ALLREDUCE = {"minBytes": "64M", "maxBytes": "64M", "iters": 100, "repeat": 10}

Snapshot = Callable[[], dict[str, bytes]]


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    """Booted, not provisioned. No Prometheus: what is tested here does not need it."""
    return lab_factory(
        HOSTS,
        LAB_ID,
        SUBNET,
        monitoring={"prometheus": False, "nodeExporter": False},
        certification={
            "baseline": "lab-cpu",
            "timeoutSeconds": TIMEOUT_S,
            "allreduce": SLOW_ALLREDUCE,
        },
    )


def _stack_args(lab: Lab) -> list[str]:
    return ["--stack", "labtest", "--stacks-dir", str(lab.stacks_dir)]


def _start(out: Path, *args: str) -> subprocess.Popen[bytes]:
    """`kiln ARGS` in the background, its output in `out`.stdout / .stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "kiln", *args],
        cwd=REPO,
        stdout=open(out.with_suffix(".stdout"), "wb"),  # noqa: SIM115 - closed with the process
        stderr=open(out.with_suffix(".stderr"), "wb"),  # noqa: SIM115
        stdin=subprocess.DEVNULL,
    )


def _finish(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> tuple[int, str, str]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"kiln {proc.args[3:]} still running after {timeout:.0f} s") from None
    return (
        code,
        out.with_suffix(".stdout").read_text(errors="replace"),
        out.with_suffix(".stderr").read_text(errors="replace"),
    )


def _crash(lab: Lab, name: str) -> None:
    """The node dies at once, as a machine losing power: nspawn and every process of the
    container killed (SIGKILL), no shutdown. `lab.up()` boots it again."""
    paths = NodePaths(lab.layout.node_dir(name))
    pid = node.nspawn_pid(paths)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    node.kill_orphans(paths)
    assert node.nspawn_pid(paths) is None
    # Not one process of the machine left in its network namespace.
    left = subprocess.run(
        ["ip", "netns", "pids", lab.layout.netns(name)], capture_output=True, text=True, check=True
    )
    assert left.stdout.split() == [], f"{name} still runs {left.stdout.split()}"


def _statuses(output: str) -> dict[str, tuple[str, int, int]]:
    """(status, failed, unreachable) by host from the CLI's provisioning table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        # Seven cells and numbers from the third on: not the table of lab machines.
        if len(cells) == 7 and cells[0] in {h["name"] for h in HOSTS} and cells[2].isdigit():
            rows[cells[0]] = (cells[1], int(cells[4]), int(cells[5]))
    return rows


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _assert_whole_reports(directory: Path) -> None:
    """Every file of a report directory whole: no temporary file, each one parses."""
    names = [p.name for p in directory.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith(".tmp")], names
    for path in directory.rglob("*.json"):
        json.loads(path.read_text())
    if (directory / "junit.xml").exists():
        ET.parse(directory / "junit.xml")


# -- 1. a node killed mid-provision ------------------------------------------------------


def test_a_node_killed_mid_provision_is_named_and_the_next_run_converges_it(
    lab: Lab, tmp_path: Path
):
    """f2 dies while the validation runtime installs (unpacking the lab's venv archive, or
    pip where there is none yet): it is named unreachable with the reason, fctl and f1
    finish every play, nothing is recorded as converged; `kiln lab up` boots f2 again and
    converges it."""
    artifacts = state_root() / "provision" / lab.cluster.name / "artifacts"
    marker = "TASK [validation_runtime : Unpack the runtime venv"
    started = time.monotonic()
    proc = _start(tmp_path / "provision", "provision", *_stack_args(lab))

    def progress() -> str:
        return "".join(p.read_text(errors="replace") for p in artifacts.glob("*/stdout"))

    try:
        wait_for(
            "the runtime install", progress, lambda text: marker in text or proc.poll() is not None,
            timeout_s=420,
        )  # fmt: skip
        assert proc.poll() is None, "provisioning ended before the node could be killed"
        time.sleep(1)
        _crash(lab, "f2")
    except BaseException:
        proc.kill()
        raise
    code, stdout, stderr = _finish(proc, tmp_path / "provision", timeout=600)
    elapsed = time.monotonic() - started
    rows = _statuses(stdout)
    assert code == 1, stdout[-3000:] + stderr[-3000:]
    assert rows["f2"][0] == "unreachable", rows
    for name in ("fctl", "f1"):
        assert rows[name] == ("changed", 0, 0), rows
    # By name, with the reason, and what to do about it.
    flat = " ".join(stderr.split())
    assert "failed: 1 of 3 host(s) did not finish; the other 2 finished" in flat, stderr
    # Mitogen's words depend on the moment: "disconnected ... while a call was in-progress"
    # mid-task, the SSH error ("Connection refused") at the next connection.
    assert "f2: unreachable: " in flat and "no reason reported" not in flat, stderr
    assert "disconnected" in flat or "Connection refused" in flat, stderr
    # The others finished: Slurm runs on f1, which was provisioned after f2 died.
    assert host(lab, "f1").service("slurmd").is_running
    assert not converge_record.record_path(lab.cluster).exists(), "a failed run was recorded"
    assert elapsed < 600

    again = kiln_cli("lab", "up", *_stack_args(lab), timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "f2: booted" in again.stdout
    assert "no successful converge of every host is recorded" in " ".join(again.stdout.split())
    rows = _statuses(again.stdout)
    assert rows["f2"][0] == "changed" and all(r[1:] == (0, 0) for r in rows.values()), rows
    assert host(lab, "f2").service("slurmd").is_running
    assert converge_record.load(lab.cluster) is not None


# -- what every later test must leave as it was -------------------------------------------


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Lab:
    """The lab provisioned (by the first test, or here when it ran alone)."""
    if converge_record.load(lab.cluster) is None:
        run = kiln_cli("lab", "up", *_stack_args(lab), timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return lab


@pytest.fixture(scope="module")
def recorded(converged: Lab, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """A healthy certification on disk, and what was recorded so far: `snapshot()` gives
    the converge record, the munge key and that report, byte for byte."""
    first = tmp_path_factory.mktemp("first-report")
    run = kiln_cli("certify", *_stack_args(converged), "--only", "preflight", "--out", str(first))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (first / "result.json").is_file()
    record = converge_record.record_path(converged.cluster)
    munge = secrets.munge_key_path(converged.cluster.name)

    def snapshot() -> dict[str, bytes]:
        files = {"converge record": record.read_bytes(), "munge key": munge.read_bytes()}
        return {**files, **{f"report {k}": v for k, v in _files(first).items()}}

    return snapshot


# -- 2. a stack file corrupted between two runs ------------------------------------------


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    # A write cut short: the file ends in the middle of a key.
    "truncated": lambda text: text[: text.index(b"lab:") + 2],
    # Overwritten with bytes that are not text at all.
    "garbage": lambda text: b"\x00\xff\xfe\x9c" * 64 + text[:40],
    # Still YAML, no longer a stack.
    "wrong shape": lambda text: text.replace(b"timeoutSeconds: 20", b"timeoutSeconds: soon"),
    "empty": lambda text: b"",
}


def test_a_corrupted_stack_file_is_bad_input_and_changes_nothing(
    converged: Lab, recorded: Snapshot, tmp_path: Path
):
    """Exit 2 naming the file, from every command, before anything is touched: the
    converge record, the munge key, the earlier report and the machines stay as they were."""
    before = recorded()
    path = stack_file("labtest", converged.stacks_dir)
    original = path.read_bytes()
    out = tmp_path / "never-written"
    commands = {
        "provision": ["provision", *_stack_args(converged)],
        "certify": ["certify", *_stack_args(converged), "--out", str(out)],
        "lab up": ["lab", "up", *_stack_args(converged)],
    }
    try:
        for corruption, corrupt in CORRUPTIONS.items():
            path.write_bytes(corrupt(original))
            # Every command for the most common corruption, provisioning for the others.
            names = list(commands) if corruption == "truncated" else ["provision"]
            for name in names:
                run = kiln_cli(*commands[name], timeout=120)
                what = f"{name} with a {corruption} stack file"
                assert run.returncode == 2, f"{what}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
                assert str(path) in " ".join(run.stderr.split()), f"{what}: {run.stderr}"
                assert "internal error" not in run.stderr, f"{what}: {run.stderr}"
    finally:
        path.write_bytes(original)
    assert recorded() == before
    assert not out.exists()
    assert all(n.running and n.ssh for n in converged.status())
    # The stack is good again: nothing was left half-done to trip the next run.
    assert kiln_cli("config", "check", *_stack_args(converged)).returncode == 0


# -- 3. the report directory's disk is full ----------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, always unmounted afterwards (a kernel mount outlives the test)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=False)
        assert str(mount) not in Path("/proc/self/mounts").read_text()


def _fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 65536):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_report_disk_fails_clearly_and_keeps_the_earlier_reports(
    converged: Lab, recorded: Snapshot, small_disk: Path
):
    """Exit 2 (the run cannot be recorded, so it could not run; the cluster was not judged)
    with the errno's words and the path; the earlier report stays byte for byte and no
    half-written file is left, whether the disk is full from the start or fills mid-run."""
    before = recorded()
    first = small_disk / "first"
    ok = kiln_cli("certify", *_stack_args(converged), "--only", "preflight", "--out", str(first))
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    earlier = _files(first)
    assert "result.json" in earlier and "evidence/preflight.json" in earlier

    filler = _fill(small_disk)
    # Full from the start: refused before any host is reached, even into its own directory.
    started = time.monotonic()
    run = kiln_cli("certify", *_stack_args(converged), "--only", "preflight", "--out", str(first))
    flat = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "No space left on device" in flat and str(first) in flat, run.stderr
    assert "internal error" not in run.stderr
    assert time.monotonic() - started < 60
    assert _files(first) == earlier

    # Room for the probe and the preflight evidence, not for the four reports: the run
    # stops at its first save, and replaces nothing.
    os.truncate(filler, (filler.stat().st_size // 4096 - 3) * 4096)
    second = small_disk / "second"
    run = kiln_cli("certify", *_stack_args(converged), "--only", "preflight", "--out", str(second))
    flat = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "No space left on device" in flat and str(second) in flat, run.stderr
    assert _files(first) == earlier
    assert not (second / "result.json").exists()
    _assert_whole_reports(second)
    assert recorded() == before


# -- 4. a node killed mid-certification --------------------------------------------------


def test_a_node_killed_mid_certification_ends_the_run_in_time_naming_it(
    converged: Lab, recorded: Snapshot, tmp_path: Path
):
    """f2 dies during the allreduce sweep (Slurm): exit 2 within timeoutSeconds + 60 s of
    the kill, f2 named as unreachable; preflight's results and the allreduce's evidence
    are on disk, every file whole; the Slurm job is cancelled, not left holding the nodes."""
    before = recorded()
    out = tmp_path / "report"
    proc = _start(tmp_path / "certify", "certify", *_stack_args(converged), "--out", str(out))
    try:
        wait_until_joined(host(converged, "f2"), 2, "validation.allreduce")
        assert proc.poll() is None
        _crash(converged, "f2")
        killed = time.monotonic()
        code, stdout, stderr = _finish(proc, tmp_path / "certify", timeout=TIMEOUT_S + 120)
        after_kill = time.monotonic() - killed
        running = host(converged, "fctl").run("squeue -h -t RUNNING -o %i").stdout.split()
    finally:
        if proc.poll() is None:
            proc.kill()
        converged.up()  # f2 boots again, as it was (no provisioning: nothing is recorded)
    text = " ".join((stdout + stderr).split())
    assert code == 2, stdout[-3000:] + stderr[-3000:]
    assert "f2 is unreachable" in text, text[-3000:]
    assert after_kill < TIMEOUT_S + 60, f"ended {after_kill:.0f} s after the kill"
    assert running == [], f"Slurm job(s) {running} still running after the run ended"

    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "error" and doc["exit_code"] == 2
    assert "f2 is unreachable" in doc["reason"]
    phases = {p["name"]: p["status"] for p in doc["phases"]}
    assert phases["preflight"] == "ok" and phases["allreduce"] == "error", phases
    preflight = json.loads((out / "evidence" / "preflight.json").read_text())
    assert sorted(preflight["facts"]) == ["f1", "f2", "fctl"]
    evidence = json.loads((out / "evidence" / "allreduce-cluster.json").read_text())
    assert "f2" in evidence["error"] and evidence["launcher"] == "slurm"
    # The survivor said who stopped answering: its own error line, not srun's.
    assert "rank 1 (host f2)" in evidence["error"], evidence["error"]
    _assert_whole_reports(out)
    assert recorded() == before


# -- 5. a cut link ------------------------------------------------------------------------


def test_a_node_cut_off_by_its_link_is_named_within_the_timeout(
    converged: Lab, recorded: Snapshot, tmp_path: Path
):
    """f2's link down (`ip link set <veth> down` on this host's end): no packet answers,
    nothing refuses. `kiln certify` names f2 unreachable at preflight with exit 2 within
    timeoutSeconds + 60 s, and keeps what the other hosts answered."""
    before = recorded()
    veth = converged.layout.veth("f2")
    out = tmp_path / "report"
    subprocess.run(["ip", "link", "set", veth, "down"], check=True)
    try:
        started = time.monotonic()
        run = kiln_cli("certify", *_stack_args(converged), "--out", str(out), timeout=300)
        elapsed = time.monotonic() - started
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    text = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "unreachable at preflight: f2 (" in text, text[-3000:]
    assert elapsed < TIMEOUT_S + 60, f"took {elapsed:.0f} s"
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "error" and doc["exit_code"] == 2
    assert [(p["name"], p["status"]) for p in doc["phases"][:1]] == [("preflight", "error")]
    preflight = json.loads((out / "evidence" / "preflight.json").read_text())
    assert sorted(preflight["facts"]) == ["f1", "fctl"] and sorted(preflight["errors"]) == ["f2"]
    _assert_whole_reports(out)
    # The link is back: so is the node, untouched.
    wait_for("f2 over SSH", lambda: host(converged, "f2").run("true").rc, lambda rc: rc == 0, 60)
    assert recorded() == before
