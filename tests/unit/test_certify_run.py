"""`certify_stack` end to end on a simulated cluster: verdicts, exit codes, culprits, partial
results. Only the network is simulated (SSH facts and benchmark runs); rules, isolation,
the report files and the exit codes are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln import certify as seam
from kiln.certification import preflight as pre
from kiln.certification.launch import GroupOutcome
from kiln.certification.rules import MISSING_FAULT
from kiln.certification.run import Certification, Request, certify_stack
from kiln.certification.simulate import SimulatedFabric
from kiln.errors import UsageError
from kiln.inventory import Access
from kiln.ssh import SshTarget
from kiln.stack import load_stack
from tests.conftest import REPO, write_stack
from validation.results import (
    AllreduceMeasurement,
    AllreduceMetrics,
    AllreduceResult,
    Environ,
)

pytestmark = pytest.mark.unit

COMPUTES = ["n1", "n2", "n3", "n4"]
FACTS = {
    "hostname": None,
    "kernel": "6.1.0-17-amd64",
    "os": "debian 12",
    "arch": "x86_64",
    "gpu_model": None,
    "gpu_driver": None,
    "nccl": None,
    "torch": "2.13.0+cpu",
    "transformers": "5.24.0",
    "rdma_devices": [],
    "rdma_ports": [],
    "shared_fs": "fuse.glusterfs",
}


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    key.write_text("not a real key")
    hosts = [{"name": "ctl", "address": "192.0.2.10", "roles": ["controller", "storage"]}]
    hosts += [{"name": n, "address": f"192.0.2.{11 + i}"} for i, n in enumerate(COMPUTES)]
    write_stack(
        tmp_path,
        "sim",
        {
            "name": "sim",
            "nodePools": [
                {
                    "name": "cpu",
                    "provider": "static",
                    "hosts": hosts,
                    "ssh": {"privateKeyPath": str(key), "knownHosts": str(key)},
                }
            ],
            "storage": {"kind": "glusterfs", "mountPoint": "/shared"},
            "scheduler": "slurm",
            "certification": {"baseline": "lab-cpu", "timeoutSeconds": 30},
        },
    )
    return tmp_path


def access(cluster) -> Access:
    return Access(
        {
            h.name: SshTarget(h.name, str(h.address), "root", Path("k"), Path("kh"), 22)
            for h in cluster.hosts
        }
    )


def allreduce_doc(hosts, busbw: float) -> dict:
    row = AllreduceMeasurement("float32", 64 << 20, 16 << 20, 1.0, 1.0, 1.0, busbw, busbw, 0)
    metrics = AllreduceMetrics([row], busbw, 2 * (len(hosts) - 1) / len(hosts))
    env = Environ(list(hosts), len(hosts), "gloo", "2.13.0", "3.11.2")
    return AllreduceResult(env, metrics).to_dict()


class Cluster:
    """The simulated cluster: facts per host, a fabric for benchmark runs."""

    def __init__(self, monkeypatch, fabric: SimulatedFabric, unreachable=(), dead=()):
        self.fabric, self.dead, self.groups = fabric, set(dead), []

        def gather(targets, command, timeout):
            return {
                n: pre.HostFacts(n, None, f"{n} ({t.address}): timed out")
                if n in unreachable
                else pre.HostFacts(n, {**FACTS, "hostname": n})
                for n, t in targets.items()
            }

        def views(target, cluster, port, timeout):
            slurm = dict.fromkeys(COMPUTES, "idle")
            return slurm, dict.fromkeys(["ctl", *COMPUTES], "up"), None

        def allreduce(run, hosts):
            self.groups.append(tuple(hosts))
            if self.dead & set(hosts):
                bad = sorted(self.dead & set(hosts))
                error = f"validation.allreduce failed on {', '.join(bad)}: no answer"
                return GroupOutcome(tuple(hosts), None, error, bad, "slurm")
            value = self.fabric.run_round([tuple(hosts)])[0]
            return GroupOutcome(tuple(hosts), allreduce_doc(hosts, value), launcher="slurm")

        monkeypatch.setattr(pre, "gather_all", gather)
        monkeypatch.setattr(pre, "controller_views", views)
        monkeypatch.setattr(Certification, "_allreduce", allreduce)


def fabric(bad=None) -> SimulatedFabric:
    return SimulatedFabric(
        ["ctl", *COMPUTES], base_gbps=0.8, noise=0.05, bad_nodes=bad or {}, seed=3
    )


def certify(stack: Path, out: Path, **request):
    cluster = load_stack("sim", stack)
    return certify_stack(
        cluster, Request("sim", out, publish=False, **request), access=access(cluster)
    )


def test_a_healthy_cluster_passes_and_every_report_is_written(stack, tmp_path, monkeypatch):
    Cluster(monkeypatch, fabric())
    result = certify(stack, tmp_path / "out")
    assert result.status == "pass" and result.exit_code == 0, result.reason
    assert result.isolation is None and result.culprits == []
    for name in ("result.json", "report.html", "junit.xml", "kiln.prom", "evidence/preflight.json"):
        assert (tmp_path / "out" / name).is_file(), name
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert (
        doc["status"] == "pass" and doc["exit_code"] == 0 and doc["baseline"]["class"] == "lab-cpu"
    )


def test_a_slow_node_fails_and_is_the_only_one_blamed(stack, tmp_path, monkeypatch):
    sim = Cluster(monkeypatch, fabric({"n3": 0.25}))
    result = certify(stack, tmp_path / "out")
    assert result.status == "fail" and result.exit_code == 1
    assert [(c.kind, c.hosts) for c in result.culprits] == [("node", ("n3",))]
    blamed = {r.subject for r in result.failed_rules}
    assert blamed == {"cluster", "n3"}, blamed
    assert "n3" in result.reason and "KILN-ISO-001" in result.reason
    # Isolation ran groups of the computes (plus no referee needed: halves were good).
    assert sim.groups[0] == tuple(COMPUTES) and len(sim.groups) <= 1 + 2 * 2 + 1
    assert all(Path(tmp_path / "out" / r.evidence).is_file() for r in result.isolation.runs)
    blame = next(r for r in result.rules if r.rule == "allreduce.isolation")
    assert blame.value is not None and blame.value < result.isolation.threshold_gbps


def test_a_host_unreachable_at_preflight_stops_the_run_naming_it(stack, tmp_path, monkeypatch):
    sim = Cluster(monkeypatch, fabric(), unreachable={"n2"})
    result = certify(stack, tmp_path / "out")
    assert result.status == "error" and result.exit_code == 2
    assert "n2" in result.reason and "unreachable" in result.reason
    assert sim.groups == []  # nothing was benchmarked on a cluster missing a host
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["status"] == "error" and doc["facts"]["n1"]["kernel"] == FACTS["kernel"]


def test_a_node_dying_in_the_benchmark_is_exit_2_naming_it_and_never_a_pass(
    stack, tmp_path, monkeypatch
):
    Cluster(monkeypatch, fabric(), dead={"n4"})
    result = certify(stack, tmp_path / "out")
    assert result.status == "error" and result.exit_code == 2 and "n4" in result.reason
    busbw = next(r for r in result.rules if r.rule == "allreduce.busbw")
    assert busbw.status == "fail" and busbw.fault_code == MISSING_FAULT
    # What was measured before it stopped is on disk.
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any(r["rule"] == "preflight.homogeneous" for r in doc["rules"])


def test_only_preflight_runs_no_benchmark_and_judges_no_bandwidth(stack, tmp_path, monkeypatch):
    sim = Cluster(monkeypatch, fabric())
    result = certify(stack, tmp_path / "out", only=("preflight",))
    assert result.status == "pass" and sim.groups == []
    assert not any(r.rule.startswith("allreduce") for r in result.rules)


def test_a_node_with_drifted_software_is_named(stack, tmp_path, monkeypatch):
    Cluster(monkeypatch, fabric())
    original = pre.gather_all

    def drifted(targets, command, timeout):
        facts = original(targets, command, timeout)
        facts["n2"].facts["torch"] = "2.12.1+cpu"
        return facts

    monkeypatch.setattr(pre, "gather_all", drifted)
    result = certify(stack, tmp_path / "out")
    failed = [(r.rule, r.subject) for r in result.failed_rules]
    assert failed == [("preflight.homogeneous", "n2")] and result.exit_code == 1


def test_compare_calls_out_a_regression(stack, tmp_path, monkeypatch):
    Cluster(monkeypatch, fabric())
    certify(stack, tmp_path / "before")
    # 0.8 -> 0.5 GB/s: still within lab-cpu's bounds, but beyond its 25% warn band.
    Cluster(monkeypatch, SimulatedFabric(["ctl", *COMPUTES], base_gbps=0.5, noise=0.0))
    result = certify(stack, tmp_path / "after", compare=tmp_path / "before")
    names = {(r["name"], r["subject"]) for r in result.regressions}
    assert ("allreduce.busbw_gbps", "cluster") in names
    assert (
        result.status in ("warn", "fail") and "regression" in result.reason or result.failed_rules
    )


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"only": ("nbody",)}, "unknown phase nbody"),
        ({"profile": "extreme"}, "--profile"),
        ({"compare": Path("/nonexistent/dir")}, "no result.json"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(
    stack, tmp_path, monkeypatch, request_args, message
):
    sim = Cluster(monkeypatch, fabric())
    with pytest.raises(UsageError, match=message):
        certify(stack, tmp_path / "out", **request_args)
    assert sim.groups == [] and not (tmp_path / "out").exists()


def test_kubernetes_stacks_are_refused_saying_why():
    with pytest.raises(UsageError, match="Kubernetes"):
        certify_stack(load_stack("prod", REPO / "stacks"), Request("prod", Path("/nonexistent")))


def test_a_stack_without_a_baseline_is_told_which_key_to_set(stack, tmp_path, monkeypatch):
    Cluster(monkeypatch, fabric())
    text = (stack / "Pulumi.sim.yaml").read_text().replace("baseline: lab-cpu", "baseline: null")
    (stack / "Pulumi.sim.yaml").write_text(text)
    with pytest.raises(UsageError, match=r"certification\.baseline"):
        certify(stack, tmp_path / "out")


def test_the_pulumi_seam_records_the_verdict_and_culprits(stack, tmp_path, monkeypatch):
    Cluster(monkeypatch, fabric({"n1": 0.2}))
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr("kiln.certification.run.access_for", access)
    record = seam.record(seam.certify(load_stack("sim", stack), seam.CertifyContext("h1")), "h1")
    assert record["status"] == "fail" and record["busbwGbps"] is None
    assert record["verdict"]["culprits"] == [
        {"kind": "node", "hosts": ["n1"], "faultCode": "KILN-ISO-001"}
    ]
    assert Path(record["report"]).is_file() and "state/certifications/sim" in record["report"]
    assert record["provisioningHash"] == "h1"


def test_a_host_that_cannot_take_kiln_prom_is_named_and_the_verdict_stands(
    stack, tmp_path, monkeypatch
):
    Cluster(monkeypatch, fabric())
    copied = {}

    def publish_one(target, data, directory):
        copied[target.name] = data
        return f"{target.name}: disk full" if target.name == "n2" else None

    monkeypatch.setattr("kiln.certification.publish.publish_one", publish_one)
    cluster = load_stack("sim", stack)
    result = certify_stack(cluster, Request("sim", tmp_path / "out"), access=access(cluster))
    assert result.status == "pass" and set(copied) == {"ctl", *COMPUTES}
    assert copied["n1"] == (tmp_path / "out" / "kiln.prom").read_bytes()
    publish = result.phases[-1]
    assert (
        publish.name == "publish"
        and publish.status == "failed"
        and "n2: disk full" in publish.message
    )
