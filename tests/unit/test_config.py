"""The stack config model: the shipped examples load, and every mistake names its key path."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from kiln.config import PulumiSecret
from kiln.stack import ConfigError, cluster_from_document, load_stack
from tests.conftest import REPO, kiln_cli, write_stack

pytestmark = pytest.mark.unit

STACKS = REPO / "stacks"


def test_lab_stack_is_three_lab_nodes_with_addresses_in_the_lab_subnet():
    cluster = load_stack("lab", STACKS)
    assert [h.name for h in cluster.hosts] == ["ctl1", "node1", "node2"]
    assert all(p.provider == "lab" for p in cluster.node_pools)
    subnet = cluster.lab_settings.subnet
    addresses = [h.address for h in cluster.hosts]
    assert all(a in subnet for a in addresses)
    assert len(set(addresses)) == 3
    assert cluster.lab_settings.gateway not in addresses
    assert "controller" in cluster.hosts[0].roles


def test_prod_stack_is_eight_h100_nodes_on_infiniband_with_secret_key():
    cluster = load_stack("prod", STACKS)
    gpu_pool = next(p for p in cluster.node_pools if p.gpu)
    assert len(gpu_pool.hosts) == 8
    assert gpu_pool.gpu.model.startswith("H100") and gpu_pool.gpu.per_node == 8
    assert gpu_pool.rdma.fabric == "infiniband" and gpu_pool.rdma.required
    # Encrypted in the file; only Pulumi can decrypt it.
    assert isinstance(gpu_pool.ssh.private_key, PulumiSecret)
    assert cluster.scheduler == "kubernetes"


def test_staging_stack_is_four_a100_nodes_on_roce_with_nfs():
    cluster = load_stack("staging", STACKS)
    gpu_pool = next(p for p in cluster.node_pools if p.gpu)
    assert len(gpu_pool.hosts) == 4 and gpu_pool.gpu.model.startswith("A100")
    assert gpu_pool.rdma.fabric == "roce"
    assert cluster.storage.kind == "nfs" and cluster.storage.server


def _static_cluster() -> dict:
    return {
        "name": "t",
        "nodePools": [
            {
                "name": "gpu",
                "provider": "static",
                "hosts": [
                    {"name": "gpu001", "address": "10.0.0.11"},
                    {"name": "gpu002", "address": "10.0.0.12"},
                ],
                "ssh": {"user": "ubuntu", "privateKeyPath": "/keys/id"},
            }
        ],
    }


def _problems(cluster: dict, **top: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cluster_from_document({"config": {"kiln:cluster": cluster, **top}}, "test")
    return [str(p) for p in info.value.problems]


def _edit(path: str, value: object) -> dict:
    """A valid cluster with one value replaced (dotted path, ints index lists)."""
    cluster = copy.deepcopy(_static_cluster())
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = cluster
    for part in parents:
        node = node[part]
    node[last] = value
    return cluster


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (_edit("nodePools.0.hostz", []), "kiln:cluster.nodePools[0].hostz: unknown key"),
        (
            _edit("nodePools.0.hosts.1.address", "10.0.0.999"),
            "kiln:cluster.nodePools[0].hosts[1].address",
        ),
        (_edit("nodePools.0.ssh.port", "twenty-two"), "kiln:cluster.nodePools[0].ssh.port"),
        (
            _edit("nodePools.0.provider", "aws"),
            "kiln:cluster.nodePools[0].provider: Input should be 'static' or 'lab'",
        ),
        (
            _edit("nodePools.0.hosts.1.name", "gpu001"),
            "kiln:cluster.nodePools[0].hosts[1].name: duplicate host name 'gpu001' (first at kiln:cluster.nodePools[0].hosts[0].name)",
        ),
        (
            _edit("nodePools.0.hosts.1.address", "10.0.0.11"),
            "kiln:cluster.nodePools[0].hosts[1].address: duplicate host address '10.0.0.11'",
        ),
        (
            _edit("nodePools.0.hosts.0.name", "GPU_001"),
            "kiln:cluster.nodePools[0].hosts[0].name: 'GPU_001' is not a valid host name",
        ),
        (
            _edit("nodePools.0.hosts.1", {"name": "gpu002"}),
            "kiln:cluster.nodePools[0].hosts[1].address: required for static pools",
        ),
        (
            _edit("nodePools.0.ssh", {"user": "ubuntu"}),
            "kiln:cluster.nodePools[0].ssh: missing SSH key",
        ),
        (
            _edit(
                "nodePools.0.gpu",
                {"model": "H100", "perNode": 8, "driver": "latest", "nccl": "2.21.5"},
            ),
            "kiln:cluster.nodePools[0].gpu.driver: 'latest' is not a version",
        ),
        (
            _edit(
                "nodePools.0.gpu",
                {"model": "H100", "perNode": 0, "driver": "550.54.15", "nccl": "2.21.5"},
            ),
            "kiln:cluster.nodePools[0].gpu.perNode: Input should be greater than or equal to 1",
        ),
        (
            _edit("nodePools.0.rdma", {"fabric": "roce", "mtu": 9000}),
            "kiln:cluster.nodePools[0].rdma.mtu",
        ),
        (
            _edit("storage", {"kind": "nfs", "export": "/data"}),
            "kiln:cluster.storage: nfs storage needs both 'server' and 'export'",
        ),
        (
            _edit("scheduler", "pbs"),
            "kiln:cluster.scheduler: Input should be 'slurm' or 'kubernetes'",
        ),
        (_edit("nodePools", []), "kiln:cluster.nodePools: List should have at least 1 item"),
        (
            _edit("storage", {"kind": "glusterfs"}),
            "kiln:cluster.storage.server: glusterfs needs a server",
        ),
        (
            _edit("nodePools.0.rdma", {"fabric": "none", "required": True}),
            "kiln:cluster.nodePools[0].rdma.required: RDMA is required but fabric is 'none'",
        ),
    ],
)
def test_each_mistake_names_its_key_path(cluster, expected):
    problems = _problems(cluster)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_schema_problem_is_reported_at_once_not_just_the_first():
    cluster = _static_cluster()
    cluster["scheduler"] = "pbs"
    cluster["monitoringg"] = {}
    cluster["nodePools"][0]["ssh"]["port"] = 0
    paths = sorted(p.split(": ")[0] for p in _problems(cluster))
    assert paths == [
        "kiln:cluster.monitoringg",
        "kiln:cluster.nodePools[0].ssh.port",
        "kiln:cluster.scheduler",
    ]


def test_unknown_kiln_config_key_is_an_error_not_ignored():
    problems = _problems(_static_cluster(), **{"kiln:clustr": {}})
    assert problems == ["kiln:clustr: unknown key (expected one of ['cluster', 'kubeconfig'])"]


def test_gpu_driver_owner_is_roles_or_operator_never_both():
    cluster = {**_static_cluster(), "gpuDriverOwner": "both"}
    assert _problems(cluster) == [
        "kiln:cluster.gpuDriverOwner: Input should be 'roles' or 'operator'"
    ]


def test_a_kubeconfig_pasted_in_clear_is_refused_without_echoing_it():
    problems = _problems(
        {**_static_cluster(), "scheduler": "kubernetes"},
        **{"kiln:kubeconfig": {"apiVersion": "v1", "token": "s3cr3t-token"}},
    )
    assert problems == [
        "kiln:kubeconfig: must be the kubeconfig as a Pulumi secret: "
        "pulumi config set --secret kiln:kubeconfig < kubeconfig.yaml"
    ]
    assert "s3cr3t" not in " ".join(problems)


def test_other_providers_config_keys_are_left_alone():
    document = {"config": {"kiln:cluster": _static_cluster(), "aws:region": "us-east-1"}}
    assert cluster_from_document(document, "test").name == "t"


@pytest.mark.parametrize(
    ("lab", "host_address", "expected"),
    [
        (
            {"subnet": "10.77.0.0/16"},
            None,
            "kiln:cluster.lab.subnet: 10.77.0.0/16: the lab needs a private /24",
        ),
        (
            {"subnet": "8.8.8.0/24"},
            None,
            "kiln:cluster.lab.subnet: 8.8.8.0/24: the lab needs a private /24",
        ),
        ({"id": "much-too-long"}, None, "kiln:cluster.lab.id"),
        (
            {},
            "10.99.0.5",
            "kiln:cluster.nodePools[0].hosts[0].address: 10.99.0.5 is outside the lab subnet",
        ),
        ({}, "10.77.0.1", "kiln:cluster.nodePools[0].hosts[0].address: 10.77.0.1 is reserved"),
    ],
)
def test_lab_mistakes_name_their_key_path(lab, host_address, expected):
    host = {"name": "n1", **({"address": host_address} if host_address else {})}
    cluster = {
        "name": "l",
        "lab": lab,
        "nodePools": [{"name": "lab", "provider": "lab", "hosts": [host]}],
    }
    assert any(p.startswith(expected) for p in _problems(cluster))


def test_lab_hosts_without_address_get_free_ones_around_explicit_ones():
    hosts = [{"name": "a"}, {"name": "b", "address": "10.77.0.11"}, {"name": "c"}]
    cluster = cluster_from_document(
        {
            "config": {
                "kiln:cluster": {
                    "name": "l",
                    "nodePools": [{"name": "p", "provider": "lab", "hosts": hosts}],
                }
            }
        },
        "test",
    )
    assert [h.address for h in cluster.hosts] == [
        ipaddress.IPv4Address(a) for a in ("10.77.0.10", "10.77.0.11", "10.77.0.12")
    ]


def test_cli_config_check_accepts_every_shipped_stack():
    for stack in ("lab", "staging", "prod"):
        result = kiln_cli("config", "check", "--stack", stack)
        assert result.returncode == 0, result.stderr
        assert "is valid" in result.stdout


def test_cli_reports_every_problem_on_its_own_line_with_exit_2_and_no_traceback(tmp_path: Path):
    cluster = _edit("nodePools.0.hosts.1.address", "10.0.0.11")
    cluster["nodePools"][0]["ssh"]["privateKeyPath"] = str(tmp_path / "missing-key")
    write_stack(tmp_path, "bad", cluster)
    result = kiln_cli("config", "check", "--stack", "bad", "--stacks-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "kiln:cluster.nodePools[0].hosts[1].address: duplicate host address '10.0.0.11'"
        in result.stderr
    )
    # Cross-checks run first; the key file check only once the stack itself is valid.
    cluster["nodePools"][0]["hosts"][1]["address"] = "10.0.0.12"
    write_stack(tmp_path, "bad", cluster)
    result = kiln_cli("config", "check", "--stack", "bad", "--stacks-dir", str(tmp_path))
    assert result.returncode == 2
    assert (
        f"kiln:cluster.nodePools[0].ssh.privateKeyPath: no such file: {tmp_path}/missing-key"
        in result.stderr
    )


def test_cli_missing_stack_lists_the_available_ones():
    result = kiln_cli("config", "check", "--stack", "nope")
    assert result.returncode == 2
    assert "no such stack file" in result.stderr and "Pulumi.lab.yaml" in result.stderr


def test_secret_values_never_appear_in_error_output(tmp_path: Path):
    secret = "-----BEGIN OPENSSH PRIVATE KEY----- c2VjcmV0LWtleS1tYXRlcmlhbA=="
    cluster = _static_cluster()
    cluster["nodePools"][0]["ssh"] = {"user": 7, "privateKey": secret, "privateKeyy": secret}
    cluster["nodePools"][0]["hosts"][0]["roles"] = [secret]
    write_stack(tmp_path, "leak", cluster)
    result = kiln_cli("config", "check", "--stack", "leak", "--stacks-dir", str(tmp_path))
    assert result.returncode == 2
    assert "c2VjcmV0" not in result.stderr + result.stdout
    assert "kiln:cluster.nodePools[0].ssh.privateKeyy: unknown key" in result.stderr


def _gpu(model: str = "H100-SXM5-80GB") -> dict:
    return {"model": model, "perNode": 8, "driver": "550.127.08", "nccl": "2.21.5"}


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            _edit("nodePools.0.gpu", _gpu("RTX 6000 Ada")),
            "kiln:cluster.nodePools[0].gpu.model: 'RTX 6000 Ada' is not a GPU model name",
        ),
        (
            _edit("nodePools.0.gpu", _gpu("h100:sxm")),
            "kiln:cluster.nodePools[0].gpu.model: 'h100:sxm' is not a GPU model name",
        ),
        (
            _edit(
                "nodePools.0.hosts", [{"name": "c1", "address": "10.0.0.5", "roles": ["storage"]}]
            ),
            "kiln:cluster.nodePools: scheduler slurm needs at least one host with role 'compute'",
        ),
        (
            _edit(
                "nodePools.0.hosts",
                [
                    {"name": "ctl1", "address": "10.0.0.5", "roles": ["controller"]},
                    {"name": "ctl2", "address": "10.0.0.6", "roles": ["controller", "compute"]},
                ],
            ),
            "kiln:cluster.nodePools[0].hosts[1].roles: 'ctl2' would be a second Slurm controller",
        ),
    ],
)
def test_slurm_mistakes_fail_before_any_host_changes(cluster, expected):
    problems = _problems(cluster)
    assert any(p.startswith(expected) for p in problems), problems


def test_gpu_pool_without_compute_hosts_would_be_an_empty_partition():
    cluster = _static_cluster()
    cluster["nodePools"].append(
        {
            "name": "h100",
            "provider": "static",
            "hosts": [{"name": "gpu009", "address": "10.0.0.19", "roles": ["storage"]}],
            "ssh": {"user": "ubuntu", "privateKeyPath": "/keys/id"},
            "gpu": _gpu(),
        }
    )
    assert _problems(cluster) == [
        "kiln:cluster.nodePools[1].hosts: pool 'h100' has GPUs but no host with role "
        "'compute': its Slurm partition would have no nodes"
    ]
    # Kubernetes has no partitions: the same pools are fine there.
    cluster["scheduler"] = "kubernetes"
    document = {"config": {"kiln:cluster": cluster, "kiln:kubeconfig": {"secure": "v1:x"}}}
    assert cluster_from_document(document, "test").name == "t"


def test_a_compute_host_listed_in_two_pools_is_a_duplicate_host():
    cluster = _static_cluster()
    second = copy.deepcopy(cluster["nodePools"][0])
    second["name"] = "gpu2"
    second["hosts"] = [{"name": "gpu002", "address": "10.0.0.22"}]
    cluster["nodePools"].append(second)
    assert (
        "kiln:cluster.nodePools[1].hosts[0].name: duplicate host name 'gpu002' "
        "(first at kiln:cluster.nodePools[0].hosts[1].name)"
    ) in _problems(cluster)


def test_a_service_pool_without_compute_hosts_is_not_a_partition():
    # Staging keeps its controller in a pool of its own: valid for Slurm.
    cluster = load_stack("staging", STACKS)
    assert [h.roles for h in cluster.node_pools[0].hosts] == [["controller"]]


def test_config_check_warns_of_a_gpu_pool_whose_nccl_build_cannot_be_chosen(tmp_path):
    # Valid, but the nccl role would stop later: said at check time, exit still 0.
    staging = kiln_cli("config", "check", "--stack", "staging")
    assert staging.returncode == 0 and "note:" not in staging.stdout, staging.stdout
    document = yaml.safe_load((STACKS / "Pulumi.staging.yaml").read_text())
    del document["config"]["kiln:cluster"]["nodePools"][1]["gpu"]["cuda"]
    (tmp_path / "Pulumi.nocuda.yaml").write_text(yaml.safe_dump(document))
    run = kiln_cli("config", "check", "--stack", "nocuda", "--stacks-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())
    assert "note: kiln:cluster.nodePools[1].gpu.cuda: unset" in text, text
    assert "set the CUDA release your jobs use" in text
