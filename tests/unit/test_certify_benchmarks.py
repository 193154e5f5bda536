"""The full profile on a simulated cluster: GEMM, shared storage and the training-scaling
ladder are run through the launcher seam, read through the benchmarks' own readers and
judged by the baseline's rules; the slow node is named, a dead one stops the run."""

from __future__ import annotations

import json

import pytest

from kiln.certification import benchmarks
from kiln.certification.launch import GroupOutcome
from kiln.stack import load_stack
from tests.conftest import REPO
from tests.unit.benchmark_docs import gemm_doc, models_doc, storage_doc
from tests.unit.test_certify_run import COMPUTES, Cluster, certify, fabric, stack  # noqa: F401

pytestmark = pytest.mark.unit


class Benchmarks:
    """What each benchmark measures on the simulated cluster, per host."""

    def __init__(self, monkeypatch, gemm=None, storage=None, efficiency=1.0, dead=()):
        self.gemm = {h: 0.05 for h in COMPUTES} | (gemm or {})
        self.storage = {h: 0.4 for h in COMPUTES} | (storage or {})
        self.efficiency, self.dead, self.launches = efficiency, set(dead), []

        def launch(run, module, args, hosts):
            self.launches.append((module, tuple(hosts), list(args)))
            if self.dead & set(hosts):
                bad = sorted(self.dead & set(hosts))
                return GroupOutcome(tuple(hosts), None, f"{module} failed on {bad[0]}", bad)
            if module == "validation.gemm":
                doc = gemm_doc({h: self.gemm[h] for h in hosts})
            elif module == "validation.storage":
                doc = storage_doc({h: self.storage[h] for h in hosts})
            else:
                # Weak scaling: each rank keeps its rate at N=1, less with N beyond.
                rate = 100.0 * (self.efficiency if len(hosts) > 1 else 1.0)
                doc = models_doc(hosts, {"resnet-tiny": rate, "bert-tiny": rate / 2})
            return GroupOutcome(tuple(hosts), doc, launcher="slurm")

        monkeypatch.setattr(benchmarks, "_launch", launch)


def failed(result):
    return sorted((r.rule, r.subject) for r in result.failed_rules)


def test_a_healthy_cluster_passes_the_full_profile(stack, tmp_path, monkeypatch):  # noqa: F811
    Cluster(monkeypatch, fabric())
    sim = Benchmarks(monkeypatch)
    result = certify(stack, tmp_path / "out", profile="full")
    assert result.status == "pass", result.reason
    assert [p.name for p in result.phases][:5] == [
        "preflight",
        "allreduce",
        "gemm",
        "storage",
        "models",
    ]
    ladder = [hosts for module, hosts, _ in sim.launches if module == "validation.models"]
    assert ladder == [tuple(COMPUTES[:1]), tuple(COMPUTES[:2]), tuple(COMPUTES)]
    assert {s["workload"] for s in result.scaling} == {"resnet-tiny", "bert-tiny"}
    fit = next(s for s in result.scaling if s["workload"] == "resnet-tiny")
    assert [r["n"] for r in fit["rungs"]] == [1, 2, 4]
    assert all(r["efficiency"] == pytest.approx(1.0) for r in fit["rungs"])
    judged = {r.rule for r in result.rules}
    assert {"gemm.balance", "storage.read-balance", "models.resnet-tiny.efficiency"} <= judged
    storage_args = next(a for m, _, a in sim.launches if m == "validation.storage")
    assert storage_args[0] == "/shared"  # the stack's mount point
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["scaling"] == json.loads(json.dumps(result.scaling))
    assert (tmp_path / "out" / "evidence" / "models-4.json").is_file()


def test_a_slow_storage_client_is_the_only_one_named(stack, tmp_path, monkeypatch):  # noqa: F811
    Cluster(monkeypatch, fabric())
    Benchmarks(monkeypatch, storage={"n2": 0.05})
    result = certify(stack, tmp_path / "out", profile="full")
    assert result.status == "fail" and result.exit_code == 1
    assert failed(result) == [("storage.read-balance", "n2")]
    assert result.failed_rules[0].fault_code == "KILN-STO-001" and "n2" in result.reason


def test_a_starved_gemm_node_is_named(stack, tmp_path, monkeypatch):  # noqa: F811
    Cluster(monkeypatch, fabric())
    Benchmarks(monkeypatch, gemm={"n3": 0.01})
    result = certify(stack, tmp_path / "out", only=("gemm",))
    assert failed(result) == [("gemm.balance", "n3")]


def test_training_that_does_not_scale_fails_with_its_efficiency(stack, tmp_path, monkeypatch):  # noqa: F811
    Cluster(monkeypatch, fabric())
    Benchmarks(monkeypatch, efficiency=0.05)
    result = certify(stack, tmp_path / "out", only=("models",))
    assert failed(result) == [
        ("models.bert-tiny.efficiency", "cluster"),
        ("models.resnet-tiny.efficiency", "cluster"),
    ]
    rule = next(r for r in result.rules if r.rule == "models.resnet-tiny.efficiency")
    assert rule.value == pytest.approx(0.05) and rule.fault_code == "KILN-MOD-001"
    fit = next(s for s in result.scaling if s["workload"] == "resnet-tiny")
    assert fit["break_n"] == 2


def test_a_node_dying_in_the_ladder_is_exit_2_and_keeps_what_was_measured(
    stack,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    Cluster(monkeypatch, fabric())
    Benchmarks(monkeypatch, dead={"n3"})
    result = certify(stack, tmp_path / "out", only=("storage", "models"))
    # storage ran on every compute, n3 among them: the run stops there.
    assert result.status == "error" and result.exit_code == 2 and "n3" in result.reason
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    storage = next(p for p in doc["phases"] if p["name"] == "storage")
    assert storage["status"] == "error" and "models" not in [p["name"] for p in doc["phases"]]
    missing = [m for m in doc["measurements"] if m["value"] is None]
    assert missing and "n3" in missing[0]["reason"]


def test_a_stack_without_shared_storage_skips_the_storage_phase(stack, tmp_path, monkeypatch):  # noqa: F811
    text = (stack / "Pulumi.sim.yaml").read_text()
    (stack / "Pulumi.sim.yaml").write_text(text.replace("kind: glusterfs", "kind: none"))
    Cluster(monkeypatch, fabric())
    sim = Benchmarks(monkeypatch)
    result = certify(stack, tmp_path / "out", only=("storage",))
    assert result.status == "pass" and sim.launches == []
    assert next(p for p in result.phases if p.name == "storage").status == "skipped"


@pytest.mark.parametrize(
    ("computes", "configured", "rungs"),
    [(1, (), [1]), (2, (), [1, 2]), (6, (), [1, 2, 4, 6]), (8, (), [1, 2, 4, 8]),
     (4, (1, 4, 16), [1, 4])],
)  # fmt: skip
def test_the_ladder_doubles_up_to_every_compute(computes, configured, rungs):
    assert benchmarks.ladder(computes, configured) == rungs


def test_gpu_stacks_run_full_size_models_and_cpu_stacks_tiny_ones():
    assert benchmarks.models_preset(load_stack("staging", REPO / "stacks")) == "full"
    assert benchmarks.models_preset(load_stack("lab", REPO / "stacks")) == "tiny"
