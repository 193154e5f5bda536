"""Pulumi runtime mocks for Kiln: realistic outputs per resource type, and a record of requests.

The program runs under these in tests/pulumi and bench/pulumi_program.py
(`new_monitor`, then `settled` to wait for every registration); the program
itself never imports them. No dynamic provider runs under these mocks: the
mock answers in its place, so no SSH connection, lab machine or Ansible run
is ever started.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks, rpc

from kiln import certify
from kiln.config import Cluster, NodePool

DYNAMIC = "pulumi-python:dynamic/kiln:"
PREFLIGHT = DYNAMIC + "Preflight"
LAB_MACHINES = DYNAMIC + "LabMachines"
PLAYBOOK = DYNAMIC + "Playbook"
CERTIFICATION_RUN = DYNAMIC + "CertificationRun"
MUNGE_KEY = DYNAMIC + "MungeKey"
K8S_PROVIDER = "pulumi:providers:kubernetes"
RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET_SIG = rpc._special_sig_key  # "4dabf18193072939515e22adb298388d"
FAKE_MUNGE_KEY = base64.b64encode(b"munge" * 26).decode()


@dataclass
class Registration:
    """One RegisterResource request as the engine would see it."""

    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str
    dependencies: list[str]
    inputs: dict[str, Any]
    """Inputs with secrets unwrapped (what a provider receives)."""
    wire: dict[str, Any]
    """Inputs as sent, secrets still wrapped in Pulumi's secret envelope."""


def _plain(value: Any) -> Any:
    """Secrets unwrapped, and whole floats back to int (protobuf numbers are doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, keeping every request (parent, dependencies, provider)."""

    def __init__(self, kiln_mocks: KilnMocks) -> None:
        super().__init__(kiln_mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=request.custom,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    inputs=_plain(rpc.deserialize_properties(request.object)),
                    wire=json_format.MessageToDict(request.object),
                )
            )
        return response

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def named(self, name: str) -> Registration:
        found = [r for r in self.registrations if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}, found {len(found)}"
        return found[0]


def _machine_id(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()  # 32 hex digits, like /etc/machine-id


def host_facts(pool: NodePool | None, name: str) -> dict[str, Any]:
    """What preflight reads on such a host: an HGX node for GPU pools, a VM otherwise."""
    facts: dict[str, Any] = {
        "hostname": name,
        "machine_id": _machine_id(name),
        "kernel": "6.8.0-48-generic",
        "arch": "x86_64",
        "os": "ubuntu 22.04",
        "cpus": 16,
        "memory_gib": 64,
        "gpus": None,
        "gpu_model": None,
        "gpu_driver": None,
        "nccl": None,
        "rdma_devices": [],
    }
    if pool and pool.gpu:
        facts.update(
            cpus=224,
            memory_gib=2015,
            gpus=pool.gpu.per_node,
            gpu_model=f"NVIDIA {pool.gpu.model}",
            gpu_driver=pool.gpu.driver,
            nccl=pool.gpu.nccl,
        )
    if pool:
        facts["rdma_devices"] = sorted(pool.rdma.hcas)
    return facts


def lab_facts(name: str) -> dict[str, Any]:
    """A lab node: Debian bookworm in a container sharing the host's kernel."""
    return {
        **host_facts(None, name),
        "kernel": "6.1.0-26-amd64",
        "os": "debian 12",
        "cpus": 2,
        "memory_gib": 23,
    }


def measured_busbw(cluster: Cluster) -> float:
    """Allreduce busbw a healthy cluster of this kind measures (GB/s, large messages)."""
    fabrics = {p.rdma.fabric for p in cluster.node_pools if p.gpu}
    if "infiniband" in fabrics:
        return 362.4  # 8x H100 per node, 8x 400G NDR
    if "roce" in fabrics:
        return 171.8  # 8x A100 per node, 4x 200G RoCE v2
    return 1.2  # CPU lab nodes, gloo over a veth bridge


class KilnMocks(pulumi.runtime.Mocks):
    """Per-type outputs shaped like the real providers' (dynamic ones included)."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None

    def _pool_of(self, host: str) -> NodePool | None:
        assert self.cluster is not None, "set KilnMocks.cluster before building the program"
        return next((p for p in self.cluster.node_pools if host in {h.name for h in p.hosts}), None)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        inputs.pop("__provider", None)
        typ, name = args.typ, args.name
        if typ == PREFLIGHT:
            state = {k: v for k, v in inputs.items() if k != "privateKey"}
            state["facts"] = host_facts(self._pool_of(inputs["host"]), inputs["host"])
            return f"{inputs['host']}@{inputs['address']}", state
        if typ == LAB_MACHINES:
            nodes = {
                h["name"]: {"address": h["address"], "facts": lab_facts(h["name"])}
                for h in inputs["hosts"]
            }
            lab_dir = f"/var/lib/kiln/labs/{inputs['lab']['id']}/ssh"
            return inputs["lab"]["id"], {
                **inputs,
                "nodes": nodes,
                "changes": [f"{n}: booted" for n in nodes],
                "sshConfig": f"{lab_dir}/config",
                "privateKeyPath": f"{lab_dir}/id_ed25519",
                "knownHostsPath": f"{lab_dir}/known_hosts",
            }
        if typ == PLAYBOOK:
            state = {k: v for k, v in inputs.items() if k != "secrets"}
            state["summary"] = {
                host: {"status": "changed", "ok": 14, "changed": 6, "failed": 0, "skipped": 3}
                for host in inputs["limit"]
            }
            state["secretsDigest"] = None
            return f"{inputs['stage']}:{inputs.get('pool') or 'all'}", state
        if typ == CERTIFICATION_RUN:
            assert self.cluster is not None
            record = certify.record(
                {"status": "pass", "busbwGbps": measured_busbw(self.cluster), "message": "ok"},
                inputs["provisioningHash"],
            )
            state = {k: v for k, v in inputs.items() if k != "secrets"}
            return "certification", {**state, "record": record}
        if typ == MUNGE_KEY:
            return "munge-key", {**inputs, "key": FAKE_MUNGE_KEY}
        if typ == K8S_PROVIDER:
            return f"{name}-id", {}
        if typ == RELEASE:
            status = {
                "name": name,
                "namespace": inputs.get("namespace"),
                "chart": inputs.get("chart"),
                "version": inputs.get("version"),
                "revision": 1,
                "status": "deployed",
            }
            return f"{inputs.get('namespace')}/{name}", {**inputs, "status": status}
        if typ.startswith("kubernetes:") and args.custom:
            metadata = dict(inputs.get("metadata") or {})
            metadata.update(uid=_machine_id(name), resourceVersion="1")
            return f"{name}-id", {**inputs, "metadata": metadata}
        return f"{name}-id", inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def new_monitor(stack: str = "test") -> RecordingMonitor:
    """Fresh mocks and monitor for one program; set `monitor.mocks.cluster` before building."""
    monitor = RecordingMonitor(KilnMocks())
    pulumi.runtime.set_mocks(
        monitor.mocks, project="kiln", stack=stack, preview=False, monitor=monitor
    )
    return monitor


def settled(*resources: pulumi.Resource) -> pulumi.Output[str]:
    """An Output that resolves once every resource in these trees is registered."""
    probe = pulumi.ComponentResource(
        "test:probe:Probe",
        f"probe-{id(resources)}",
        None,
        pulumi.ResourceOptions(depends_on=list(resources)),
    )
    return probe.urn


def is_wrapped_secret(value: Any) -> bool:
    """True for a value in Pulumi's secret envelope (as MessageToDict shows it)."""
    return isinstance(value, dict) and SECRET_SIG in value


def plaintext_strings(wire: Any) -> list[str]:
    """Every string in `wire` that is not inside a secret envelope."""
    if is_wrapped_secret(wire):
        return []
    if isinstance(wire, dict):
        return [s for v in wire.values() for s in plaintext_strings(v)]
    if isinstance(wire, list):
        return [s for v in wire for s in plaintext_strings(v)]
    return [wire] if isinstance(wire, str) else []
