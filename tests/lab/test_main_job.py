"""The README's main job on the embedded lab stack: `kiln lab up` builds and provisions
the cluster, running it again skips the converge, and `kiln provision --check` finds
and `kiln provision` repairs a change made by hand.

Runs the shipped `stacks/Pulumi.lab.yaml`, moved to its own lab id and subnet so
it never touches a lab a developer keeps up.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kiln import secrets
from kiln.lab.keys import generate as generate_key
from kiln.lab.layout import LabLayout
from kiln.lab.lifecycle import teardown
from kiln.paths import state_root
from kiln.role_defaults import validation_runtime
from kiln.stack import load_stack
from tests.conftest import REPO, kiln_cli
from tests.lab.secret_scan import files_under, leaks
from validation.launch import HostSpec, SlurmLauncher

pytestmark = pytest.mark.lab

LAB = {"id": "km", "subnet": "10.77.99.0/24"}
# Its own cluster name: its munge key and run records are the test's, not a developer's lab's.
CLUSTER = "kiln-km"
# Planted in the munge key store before the first run: recognisable in any file or output.
PLANTED_MUNGE_KEY = b"KILN-PLANTED-MUNGE-KEY-" * 4
# Basic auth in front of node_exporter and Prometheus, its password planted the same way.
MONITORING_USER = "kiln"
PLANTED_PASSWORD = "kiln-planted-monitoring-password-5d1c"
# What every `kiln` command of this module printed, for the secret scan at the end.
OUTPUTS: dict[str, str] = {}


def kiln(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`kiln_cli`, its output kept for `test_no_secret_reaches_any_file_or_output`."""
    run = kiln_cli(*args, timeout=timeout)
    OUTPUTS[f"stdout of kiln {' '.join(args[:3])} #{len(OUTPUTS)}"] = run.stdout
    OUTPUTS[f"stderr of kiln {' '.join(args[:3])} #{len(OUTPUTS)}"] = run.stderr
    return run


def _forget_cluster() -> None:
    for directory in (secrets.secrets_dir(CLUSTER), state_root() / "provision" / CLUSTER):
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    document = yaml.safe_load((REPO / "stacks" / "Pulumi.lab.yaml").read_text())
    document["config"]["kiln:cluster"]["lab"] = LAB
    document["config"]["kiln:cluster"]["name"] = CLUSTER
    directory = tmp_path_factory.mktemp("stacks")
    password = directory / "monitoring.password"
    password.write_text(PLANTED_PASSWORD + "\n")
    password.chmod(0o600)
    document["config"]["kiln:cluster"]["monitoring"]["basicAuth"] = {
        "user": MONITORING_USER,
        "passwordFile": str(password),
    }
    (directory / "Pulumi.lab.yaml").write_text(yaml.safe_dump(document))
    teardown(LabLayout(LAB["id"]))
    _forget_cluster()
    secrets._write_new_key(secrets.munge_key_path(CLUSTER), PLANTED_MUNGE_KEY)
    yield directory
    teardown(LabLayout(LAB["id"]))
    _forget_cluster()


@pytest.fixture(scope="module")
def first_run(stacks: Path):
    return kiln("lab", "up", "--stack", "lab", "--stacks-dir", str(stacks), timeout=1800)


def test_main_job_brings_up_and_provisions_every_node(first_run):
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-3000:]
    for node in ("ctl1", "node1", "node2"):
        assert node in first_run.stdout


def test_main_job_again_skips_the_converge_and_says_why(first_run, stacks: Path):
    assert first_run.returncode == 0
    again = kiln("lab", "up", "--stack", "lab", "--stacks-dir", str(stacks), timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "lab machines already up: nothing changed" in again.stdout
    assert "provisioning skipped: roles, inventory, secrets and every host's facts match" in (
        " ".join(again.stdout.split())
    )


def _changed_by_host(output: str) -> dict[str, int]:
    """The `changed` column of the CLI's provisioning table, by host."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if len(cells) == 7 and cells[0] in ("ctl1", "node1", "node2"):
            rows[cells[0]] = int(cells[3])
    return rows


def _provision(stacks: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return kiln("provision", "--stack", "lab", "--stacks-dir", str(stacks), *flags, timeout=1800)


def test_check_finds_nothing_to_change_on_the_converged_lab(first_run, stacks: Path):
    assert first_run.returncode == 0
    check = _provision(stacks, "--check")
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert _changed_by_host(check.stdout) == {"ctl1": 0, "node1": 0, "node2": 0}


SYSCTL = "net.ipv4.tcp_slow_start_after_idle"  # the base role sets 0
PACKAGE = "numactl"  # one of base_packages, which nothing else installed needs


def test_a_change_by_hand_is_found_by_check_and_repaired_by_provision(first_run, stacks: Path):
    assert first_run.returncode == 0
    _ssh(
        LAYOUT,
        "node1",
        f"sed -i 's/^{SYSCTL}.*/{SYSCTL}=1/' /etc/sysctl.d/90-kiln-net.conf && sysctl -qw {SYSCTL}=1",
    )
    # A package removed by hand: the roles read dpkg's list once per run and run apt
    # only for what it lacks, so this shows that list is read afresh and believed.
    _ssh(LAYOUT, "node1", f"DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {PACKAGE}")
    # The check of the whole lab is the test above; here only the drifted host's.
    check = _provision(stacks, "--check", "--diff", "--limit", "node1")
    assert check.returncode == 3, check.stdout[-3000:] + check.stderr[-3000:]
    assert _changed_by_host(check.stdout) == {"node1": 2}
    changes = "node1: would change: base : Install base packages; base : Apply network sysctls"
    assert changes in check.stdout
    assert _ssh(LAYOUT, "node1", f"sysctl -n {SYSCTL}").strip() == "1"  # check changed nothing
    assert not _installed(LAYOUT, "node1", PACKAGE)

    repair = _provision(stacks)
    assert repair.returncode == 0, repair.stdout[-3000:] + repair.stderr[-3000:]
    # Only the hand-made changes are undone: every other task on every host is idempotent.
    assert _changed_by_host(repair.stdout) == {"ctl1": 0, "node1": 2, "node2": 0}
    assert _ssh(LAYOUT, "node1", f"sysctl -n {SYSCTL}").strip() == "0"
    assert _installed(LAYOUT, "node1", PACKAGE)
    # The repair is recorded: the next `lab up` skips the converge again.
    again = kiln("lab", "up", "--stack", "lab", "--stacks-dir", str(stacks), timeout=1800)
    assert "provisioning skipped" in again.stdout, again.stdout[-3000:]


def _ssh(stacks_lab: LabLayout, node: str, command: str) -> str:
    result = subprocess.run(
        ["ssh", "-F", str(stacks_lab.ssh_config), node, command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{node}: {command}: {result.stderr}"
    return result.stdout


def _installed(stacks_lab: LabLayout, node: str, package: str) -> bool:
    status = _ssh(stacks_lab, node, f"dpkg-query -W -f='${{db:Status-Abbrev}}' {package} || true")
    return status.startswith("ii")


LAYOUT = LabLayout(LAB["id"])


def test_slurm_runs_a_job_across_every_compute(first_run):
    assert first_run.returncode == 0
    assert _ssh(LAYOUT, "ctl1", "sinfo -h -N -o '%N %t' | sort").split() == [
        "node1",
        "idle",
        "node2",
        "idle",
    ]
    assert sorted(_ssh(LAYOUT, "ctl1", "srun -N2 hostname").split()) == ["node1", "node2"]


def _http_get(node: str, url: str) -> str:
    """GET `url` from inside `node`, with the monitoring's basic auth."""
    token = base64.b64encode(f"{MONITORING_USER}:{PLANTED_PASSWORD}".encode()).decode()
    return _ssh(
        LAYOUT,
        node,
        'python3 -c "import urllib.request as u; '
        f"print(u.urlopen(u.Request('{url}', headers={{'Authorization': 'Basic {token}'}}))"
        '.read().decode())"',
    )


def _address(stacks: Path, node: str) -> str:
    """A host's address in the stack: what its exporters and Prometheus listen on."""
    return next(str(h.address) for h in load_stack("lab", stacks).hosts if h.name == node)


def test_prometheus_scrapes_every_node(first_run, stacks: Path):
    assert first_run.returncode == 0
    body = _http_get("ctl1", f"http://{_address(stacks, 'ctl1')}:9090/api/v1/targets?state=active")
    targets = json.loads(body)["data"]["activeTargets"]
    node_targets = {
        t["labels"].get("node", t["labels"]["instance"]): t["health"]
        for t in targets
        if t["labels"]["instance"].endswith(":9100")
    }
    assert node_targets == {"ctl1": "up", "node1": "up", "node2": "up"}


def test_shared_storage_is_shared(first_run):
    assert first_run.returncode == 0
    _ssh(LAYOUT, "node1", "echo written-on-node1 > /shared/main-job-probe")
    assert _ssh(LAYOUT, "node2", "cat /shared/main-job-probe").strip() == "written-on-node1"


def test_allreduce_through_slurm_on_the_computes(first_run, tmp_path: Path):
    assert first_run.returncode == 0
    launcher = SlurmLauncher(
        "ctl1",
        workdir=tmp_path,
        ssh_config=LAYOUT.ssh_config,
        wall_timeout_s=180,
        **validation_runtime(),
    )
    result = launcher.launch(
        "validation.allreduce",
        ["-b", "4K", "-e", "1M", "-f", "16", "-w", "2", "-n", "5", "--timeout", "30"],
        [HostSpec("node1"), HostSpec("node2")],
    )
    assert result.ok, result.summary()
    assert result.result is not None
    assert sorted(result.result["environ"]["hostnames"]) == ["node1", "node2"]
    assert all(
        row["wrong"] == 0 and row["busbw_gbps"] > 0 for row in result.result["metrics"]["sizes"]
    )


# -- certification: the second half of the main job ---------------------------------
#
# On the same booted lab (booting another would cost minutes): a healthy quick
# certification passes against lab-cpu; then a site baseline generated from the
# healthy runs (what a site does with its golden nodes: lab-cpu's bounds are wide
# enough for every machine of this kind, the site's are set by its own noise)
# certifies throttled links: the throttled compute, and no other, is named.


def _certify(stacks: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return kiln(
        "certify", "--stack", "lab", "--stacks-dir", str(stacks), "--out", str(out), *extra,
        timeout=900,
    )  # fmt: skip


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def healthy(first_run, stacks: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four certifications of the healthy lab: two quick (the first one is the README's),
    the full profile (GEMM, storage and the scaling ladder after the allreduce), and one
    more quick. Four, because the site baseline is generated from them: of three values the
    generator keeps all (it never goes below three), so one run that the busy host slowed
    (in CI: 0.46 GB/s against 0.84 and 0.88) set its fail bound 15% under that run, and a
    node throttled to half sat right at it; of four it drops such an outlier.

    The tests that measure (this fixture's four runs in the first of them, the slow storage
    and the throttled computes) are marked `alone` and come one after another: the bounds
    they are judged by hold for a lab that has the machine to itself (tests/parallel.py).
    The verdict check between them (half a second) is marked too, so the block waits for the
    other worker once; the one that only reads the full run's document comes after them."""
    assert first_run.returncode == 0
    outs = []
    for i in range(4):
        out = tmp_path_factory.mktemp(f"healthy{i}")
        run = _certify(stacks, out, *(("--profile", "full") if i == 2 else ()))
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        outs.append(out)
    return outs


@pytest.mark.alone
def test_a_quick_certification_of_the_healthy_lab_passes(healthy: list[Path]):
    doc = _result(healthy[0])
    assert doc["status"] in ("pass", "warn") and doc["exit_code"] == 0, doc["reason"]
    assert doc["baseline"]["class"] == "lab-cpu" and doc["culprits"] == []
    rules = {(r["rule"], r["subject"]): r["status"] for r in doc["rules"]}
    for node in ("ctl1", "node1", "node2"):
        assert rules[("preflight.homogeneous", node)] == "pass"
        assert rules[("preflight.shared-fs", node)] == "pass"
        assert rules[("preflight.prometheus-target", node)] == "pass"
    assert rules[("preflight.slurm-node", "node1")] == "pass"
    assert rules[("allreduce.correct", "cluster")] == "pass"
    busbw = next(m for m in doc["measurements"] if m["name"] == "allreduce.busbw_gbps")
    assert busbw["subject"] == "cluster" and busbw["value"] > 0.2
    # Phases in minutes, not hours (bench/certify.py prints the wall times).
    assert {p["name"] for p in doc["phases"]} >= {"preflight", "allreduce"}
    html = (healthy[0] / "report.html").read_text()
    assert "data:image/png;base64," in html and doc["status"].upper() in html


def _storage_read_gbps(out: Path, node: str) -> float:
    return next(
        m["value"]
        for m in _result(out)["measurements"]
        if m["name"] == "storage.read_gbps.large" and m["subject"] == node
    )


@pytest.mark.alone
def test_a_compute_reading_shared_storage_slowly_is_named(healthy, stacks: Path, tmp_path):
    """node1's link at an eighth of its healthy read rate: the storage rule names it alone."""
    from kiln.lab.throttle import throttle, unthrottle

    rate_mbit = max(8, int(_storage_read_gbps(healthy[2], "node1") * 8000 / 8))
    throttle(LAYOUT, "node1", rate_mbit)
    try:
        # Not published: the lab's last full verdict stays what node_exporter serves.
        run = _certify(stacks, tmp_path, "--only", "storage", "--no-publish")
    finally:
        unthrottle(LAYOUT, "node1")
    assert run.returncode == 1, run.stdout[-4000:] + run.stderr[-2000:]
    doc = _result(tmp_path)
    failed = {(r["rule"], r["subject"]) for r in doc["rules"] if r["status"] == "fail"}
    assert failed == {("storage.read-balance", "node1")}, doc["reason"]


@pytest.mark.alone
def test_the_verdict_reaches_prometheus_through_node_exporter(healthy: list[Path], stacks: Path):
    metrics = _http_get("node1", f"http://{_address(stacks, 'node1')}:9100/metrics")
    passed = [line for line in metrics.splitlines() if line.startswith("kiln_certification_passed")]
    assert passed and passed[0].endswith(" 1"), passed


@pytest.fixture(scope="module")
def site_stacks(healthy: list[Path], stacks: Path, tmp_path_factory) -> Path:
    """The lab stack certified against a baseline generated from its healthy runs."""
    directory = tmp_path_factory.mktemp("site")
    site = directory / "site-lab.yaml"
    sources = [arg for out in healthy for arg in ("--from", str(out))]
    # The lab's 2 shared CPUs make runs vary by +-20% over minutes, more than four
    # steady runs show: the site says so (a halved link still falls far below).
    made = kiln(
        "baseline", "generate", *sources, "--out", str(site), "--extends", "lab-cpu",
        "--min-tolerance", "0.35",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    document = yaml.safe_load((stacks / "Pulumi.lab.yaml").read_text())
    document["config"]["kiln:cluster"]["certification"]["baseline"] = str(site)
    (directory / "Pulumi.lab.yaml").write_text(yaml.safe_dump(document))
    return directory


def _healthy_busbw(healthy: list[Path]) -> float:
    values = [
        m["value"]
        for out in healthy
        for m in _result(out)["measurements"]
        if m["name"] == "allreduce.busbw_gbps" and m["subject"] == "cluster"
    ]
    return sorted(values)[len(values) // 2]


def _certify_throttled(site_stacks: Path, out: Path, node: str, rate_mbit: int) -> dict:
    from kiln.lab.throttle import throttle, unthrottle

    throttle(LAYOUT, node, rate_mbit)
    try:
        run = _certify(site_stacks, out)
    finally:
        unthrottle(LAYOUT, node)
    assert run.returncode == 1, run.stdout[-4000:] + run.stderr[-2000:]
    assert node in run.stdout and "report:" in run.stdout
    return _result(out)


def _blamed(doc: dict) -> set[str]:
    return {r["subject"] for r in doc["rules"] if r["status"] == "fail"}


@pytest.mark.alone
@pytest.mark.parametrize(("node", "divisor"), [("node1", 4), ("node2", 2)])
def test_a_throttled_compute_is_named_and_no_other(
    healthy, site_stacks: Path, tmp_path: Path, node: str, divisor: int
):
    """Each compute in turn: node1 at a quarter of the healthy busbw, node2 at only half."""
    healthy_busbw = _healthy_busbw(healthy)
    doc = _certify_throttled(site_stacks, tmp_path, node, int(healthy_busbw * 8000 / divisor))
    measured = next(
        m["value"]
        for m in doc["measurements"]
        if m["name"] == "allreduce.busbw_gbps" and m["subject"] == "cluster"
    )
    assert measured < 0.7 * healthy_busbw  # the throttle did bite
    assert [(c["kind"], c["hosts"]) for c in doc["culprits"]] == [("node", [node])], doc["reason"]
    assert _blamed(doc) == {"cluster", node}, doc["rules"]


def test_a_full_certification_measures_gemm_storage_and_training_scaling(healthy: list[Path]):
    doc = _result(healthy[2])
    assert doc["profile"] == "full" and doc["exit_code"] == 0, doc["reason"]
    phases = {p["name"]: p["status"] for p in doc["phases"]}
    assert phases["gemm"] == phases["storage"] == phases["models"] == "ok", phases
    rules = {(r["rule"], r["subject"]): r["status"] for r in doc["rules"]}
    for node in ("node1", "node2"):
        assert rules[("gemm.balance", node)] != "fail"
        assert rules[("storage.read-balance", node)] != "fail"
    by_name = {(m["name"], m["subject"]): m for m in doc["measurements"]}
    # Each compute read files the other one wrote, on the lab's GlusterFS volume.
    assert by_name[("storage.cross_host_reads", "cluster")]["value"] is True
    assert by_name[("storage.read_gbps.large", "node1")]["value"] > 0
    assert {s["workload"] for s in doc["scaling"]} == {"resnet-tiny", "bert-tiny"}
    for ladder in doc["scaling"]:
        assert [r["n"] for r in ladder["rungs"]] == [1, 2]
        assert all(r["throughput"] > 0 for r in ladder["rungs"])
        assert rules[(f"models.{ladder['workload']}.efficiency", "cluster")] != "fail"
    assert "Training scaling" in (healthy[2] / "report.html").read_text()


def test_no_throttle_is_left_behind(healthy):
    qdiscs = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    assert "tbf" not in qdiscs


def test_no_secret_reaches_any_file_or_output(healthy, stacks: Path, tmp_path: Path):
    """Secrets planted and generated (the munge key, the monitoring's basic-auth password, the
    lab's SSH key, used both as a clear
    `privateKey` and as a `privateKeyPath` file by static pools aimed at the lab's nodes)
    appear nowhere Kiln wrote (state directory, runner artifacts, reports) nor in what it
    printed, raw, base64, hex or JSON-quoted. Runs last: every run of the module is in."""
    layout = LabLayout(LAB["id"])
    key_text = layout.private_key.read_text()
    addresses = {
        line.split()[0].split(",")[1]: line.split()[0].split(",")[0]
        for line in layout.known_hosts.read_text().splitlines()
    }
    lab_document = yaml.safe_load((stacks / "Pulumi.lab.yaml").read_text())["config"][
        "kiln:cluster"
    ]

    def pool(name: str, hosts: list[tuple[str, list[str]]], ssh: dict) -> dict:
        return {
            "name": name,
            "provider": "static",
            "hosts": [{"name": h, "address": addresses[h], "roles": r} for h, r in hosts],
            "ssh": {"knownHosts": str(layout.known_hosts), **ssh},
        }

    static = {
        "name": "kiln-km-static",
        "storage": lab_document["storage"],
        "certification": lab_document["certification"],
        "nodePools": [
            pool("keyed", [("ctl1", ["controller", "storage"])], {"privateKey": key_text}),
            pool(
                "filed",
                [("node1", ["compute"]), ("node2", ["compute"])],
                {"privateKeyPath": str(layout.private_key)},
            ),
        ],
    }
    directory = tmp_path / "stacks"
    directory.mkdir()
    (directory / "Pulumi.static.yaml").write_text(
        yaml.safe_dump({"config": {"kiln:cluster": static}})
    )
    out = tmp_path / "static-cert"
    run = kiln(
        "certify", "--stack", "static", "--stacks-dir", str(directory), "--out", str(out),
        "--only", "preflight", "--no-publish",
    )  # fmt: skip
    # Exit 2 would mean a host could not be reached: both forms of the key were used.
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-2000:]
    facts = {
        m["subject"] for m in _result(out)["measurements"] if m["name"].startswith("preflight.")
    }
    assert {"ctl1", "node1", "node2"} <= facts, facts
    try:
        planted = {
            "munge key": secrets.read_munge_key(CLUSTER),
            "lab SSH key": key_text.encode(),
            # Used: Prometheus scraped every node with it (test_prometheus_scrapes_every_node).
            "monitoring password": PLANTED_PASSWORD.encode(),
        }
        assert planted["munge key"] == PLANTED_MUNGE_KEY, "the planted key was the one used"
        written = files_under(
            [state_root(), *healthy, out],
            # The stores themselves (0700): the cluster's secrets and the lab's own key,
            # and the lab machines' disks (a node holds its munge key, as it must), this
            # lab's and those of the labs other tests run meanwhile.
            skip=[state_root() / "secrets", layout.ssh_dir, state_root() / "labs" / "*" / "nodes"],
        )
        assert len(written) > 50, f"expected runs' artifacts and reports, found {len(written)}"
        # Another key of the lab key's type: what all such keys share is not the secret.
        generic = {"lab SSH key": generate_key("unrelated").private}
        assert leaks(planted, written, OUTPUTS, generic) == []
    finally:
        shutil.rmtree(secrets.secrets_dir("kiln-km-static"), ignore_errors=True)
