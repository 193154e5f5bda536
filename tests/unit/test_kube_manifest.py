"""Kubernetes manifests for validation runs, checked against the official 1.31 schemas."""

import kubernetes_validate
import pytest

from validation.launch import HostSpec, KubernetesLauncher

pytestmark = pytest.mark.unit

K8S_VERSION = "1.31"


def _validate(manifest: dict) -> None:
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        # The library's message embeds the whole schema; the path and reason suffice.
        path = "/".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{manifest['kind']} invalid at {path}: {exc.message}")


def _gpu_manifests() -> list[dict]:
    launcher = KubernetesLauncher("ghcr.io/example/kiln-validation:1", "cert", gpus_per_node=8)
    hosts = [
        HostSpec("gpu001", env={"NCCL_IB_HCA": "mlx5"}),
        HostSpec("gpu002", env={"NCCL_IB_HCA": "mlx5"}),
    ]
    return launcher.render(
        "allreduce-42",
        "validation.allreduce",
        ["-b", "8", "-e", "1G"],
        hosts,
        {"NCCL_DEBUG": "WARN"},
    )


def test_service_and_job_pass_strict_schema_validation() -> None:
    service, job = _gpu_manifests()
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    _validate(service)
    _validate(job)


def test_cpu_job_without_node_list_passes_strict_schema_validation() -> None:
    launcher = KubernetesLauncher("kiln:dev", active_deadline_s=600)
    for manifest in launcher.render("smoke", "validation.allreduce", [], 3):
        _validate(manifest)


def test_job_is_indexed_bounded_and_one_pod_per_node() -> None:
    service, job = _gpu_manifests()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 0  # a retried lone pod would only wait for its peers
    pod = spec["template"]["spec"]
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"]
    affinity = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["gpu001", "gpu002"]


def test_container_requests_gpus_and_rendezvous_on_pod_0() -> None:
    _, job = _gpu_manifests()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e for e in container["env"]}
    assert env["MASTER_ADDR"]["value"] == "allreduce-42-0.allreduce-42"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["NCCL_DEBUG"]["value"] == "WARN" and env["NCCL_IB_HCA"]["value"] == "mlx5"
    command = container["command"]
    assert command[:3] == ["torchrun", "--nnodes=2", "--nproc-per-node=8"]
    assert "--node-rank=$(NODE_RANK)" in command
    assert command[command.index("-m") + 1 :] == ["validation.allreduce", "-b", "8", "-e", "1G"]


def test_cpu_job_requests_no_gpus() -> None:
    _, job = KubernetesLauncher("kiln:dev").render("smoke", "validation.allreduce", [], 2)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "resources" not in container
    assert "--nproc-per-node=1" in container["command"]


def test_names_that_cannot_be_pod_host_names_are_refused() -> None:
    launcher = KubernetesLauncher("kiln:dev")
    for bad in ("Upper", "x" * 60, "under_score", "-lead"):
        with pytest.raises(ValueError, match="DNS label"):
            launcher.render(bad, "validation.allreduce", [], 1)


def test_per_host_env_that_differs_is_refused() -> None:
    hosts = [HostSpec("a", env={"X": "1"}), HostSpec("b", env={"X": "2"})]
    with pytest.raises(ValueError, match="same for every host"):
        KubernetesLauncher("kiln:dev").render("run", "validation.allreduce", [], hosts)
