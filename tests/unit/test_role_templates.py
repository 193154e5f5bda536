"""What the slurm and prometheus roles write for a GPU cluster, rendered from a real inventory.

Lab nodes have no GPU, so the lab tests never see `Gres=`, gres.conf device
lines or DCGM targets. Here the staging stack (a controller pool and four
8 x A100 nodes) goes through kiln.inventory, the roles derive what they derive,
and their templates are rendered locally with made-up hardware facts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kiln.inventory import Access, build_inventory
from kiln.ssh import SshTarget
from kiln.stack import load_stack
from tests.conftest import REPO
from tests.unit.local_playbook import run_local_playbook

pytestmark = pytest.mark.unit

# Facts a 2-socket, 64-core, 2-thread host with 1 TiB would report.
FACTS = {
    "ansible_processor_vcpus": 256,
    "ansible_processor_count": 2,
    "ansible_processor_cores": 64,
    "ansible_processor_threads_per_core": 2,
    "ansible_memtotal_mb": 1031891,
}

PLAYBOOK = """
- name: render
  hosts: all
  gather_facts: false
  tasks:
    - name: Derive the Slurm cluster
      ansible.builtin.include_role:
        name: slurm
        tasks_from: inventory.yml
        public: true  # its defaults, for the templates below
    - name: Derive the scrape targets
      ansible.builtin.include_role:
        name: prometheus
        tasks_from: targets.yml
        public: true
    - name: Render
      ansible.builtin.template:
        src: "{{ item.src }}"
        dest: "{{ out }}/{{ inventory_hostname }}.{{ item.name }}"
        mode: "0600"
      loop:
        - {src: "{{ roles_dir }}/slurm/templates/slurm.conf.j2", name: slurm.conf}
        - {src: "{{ roles_dir }}/slurm/templates/scheduling.conf.j2", name: scheduling.conf}
        - {src: "{{ roles_dir }}/slurm/templates/gres.conf.j2", name: gres.conf}
        - {src: "{{ roles_dir }}/prometheus/templates/prometheus.yml.j2", name: prometheus.yml}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cluster = load_stack("staging", REPO / "stacks")
    access = Access(
        {
            h.name: SshTarget(h.name, str(h.address), "ubuntu", Path("/k"), Path("/kh"))
            for h in cluster.hosts
        }
    )
    inventory = build_inventory(cluster, access)
    for name, hostvars in inventory["all"]["hosts"].items():
        hostvars.update(FACTS, ansible_hostname=name)
    work = tmp_path_factory.mktemp("render")
    result = run_local_playbook(work, inventory, PLAYBOOK, {})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return work


def _settings(text: str) -> list[dict[str, str]]:
    """slurm.conf lines as {Key: value} dicts (comments and blank lines dropped)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [dict(word.split("=", 1) for word in line.split()) for line in lines if "=" in line]


def test_gpu_nodes_get_their_cpus_memory_and_gres_from_the_inventory(rendered: Path):
    settings = _settings((rendered / "stg-ctl01.slurm.conf").read_text())
    nodes = {s["NodeName"]: s for s in settings if "NodeName" in s}
    assert sorted(nodes) == [f"stg-a100-0{i}" for i in range(1, 5)], "the controller is no node"
    node = nodes["stg-a100-01"]
    assert node["NodeAddr"] == "10.20.1.11"
    assert (node["CPUs"], node["Sockets"], node["CoresPerSocket"], node["ThreadsPerCore"]) == (
        "256",
        "2",
        "64",
        "2",
    )
    # Below MemTotal, so that slurmd never reports less than configured.
    assert int(node["RealMemory"]) == int(1031891 * 0.97)
    # "A100-SXM4-80GB" -> "a100": a substring of NVML's "nvidia_a100-sxm4-80gb".
    assert node["Gres"] == "gpu:a100:8"
    assert node["Features"] == "a100"  # pool and GPU type, once each
    assert {"GresTypes": "gpu"} in settings
    assert {"SlurmctldHost": "stg-ctl01(10.20.0.5)"} in settings


def test_every_host_renders_the_same_slurm_conf(rendered: Path):
    texts = {p.read_text() for p in rendered.glob("*.slurm.conf")}
    assert len(list(rendered.glob("*.slurm.conf"))) == 5 and len(texts) == 1


def test_one_partition_per_pool_of_compute_hosts(rendered: Path):
    settings = _settings((rendered / "stg-ctl01.scheduling.conf").read_text())
    partitions = [s for s in settings if "PartitionName" in s]
    # The controller-only pool `ctl` is no partition.
    assert [(p["PartitionName"], p["Nodes"], p["Default"]) for p in partitions] == [
        ("a100", "stg-a100-01,stg-a100-02,stg-a100-03,stg-a100-04", "YES")
    ]


def test_gres_conf_lists_gpus_only_where_there_are_some(rendered: Path):
    gpu = _settings((rendered / "stg-a100-02.gres.conf").read_text())
    assert gpu == [
        {"AutoDetect": "nvml"},
        {"Name": "gpu", "Type": "a100", "File": "/dev/nvidia[0-7]"},
    ]
    assert _settings((rendered / "stg-ctl01.gres.conf").read_text()) == []


def test_prometheus_scrapes_node_exporter_everywhere_and_dcgm_on_gpu_hosts(rendered: Path):
    config = yaml.safe_load((rendered / "stg-ctl01.prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    node = {c["labels"]["node"]: c["targets"] for c in jobs["node"]}
    assert node["stg-ctl01"] == ["10.20.0.5:9100"]
    assert len(node) == 5
    dcgm = {c["labels"]["node"]: (c["targets"], c["labels"]["pool"]) for c in jobs["dcgm"]}
    assert dcgm == {f"stg-a100-0{i}": ([f"10.20.1.1{i}:9400"], "a100") for i in range(1, 5)}
    assert config["global"]["external_labels"] == {"cluster": "staging-a100"}
