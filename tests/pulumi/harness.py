"""Build the Kiln program for an example stack under the mocks of `components.mocks`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.cluster import Cluster, ClusterArgs
from components.mocks import RecordingMonitor
from kiln import config
from kiln.stack import cluster_from_document
from tests.conftest import REPO

STACKS = ("lab", "staging", "prod")
FAKE_KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n"
    "    server: https://10.0.0.5:6443\n    certificate-authority-data: a2lsbi10ZXN0LWNh\n"
    "users:\n- name: kiln\n  user:\n    token: kiln-test-token-5f1d\n"
)


def fake_key(path: str) -> str:
    """What the engine hands the program for a `{secure: ...}` SSH key (decrypted)."""
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\nkiln-test-{path}\n-----END OPENSSH PRIVATE KEY-----\n"


def _decrypt(node: Any, path: str = "") -> Any:
    # The Pulumi engine decrypts `{secure: ...}` before the program sees config.
    if isinstance(node, dict):
        if set(node) == {"secure"}:
            return fake_key(path.strip("."))
        return {k: _decrypt(v, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_decrypt(v, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def stack_document(stack: str) -> dict[str, Any]:
    """`stacks/Pulumi.<stack>.yaml` as the engine passes it: secrets decrypted."""
    path = REPO / "stacks" / f"Pulumi.{stack}.yaml"
    return _decrypt(yaml.safe_load(path.read_text()))


def stack_cluster(stack: str, **changes: Any) -> config.Cluster:
    """The config model of an example stack, with `changes` merged into `kiln:cluster`."""
    document = copy.deepcopy(stack_document(stack))
    document["config"]["kiln:cluster"].update(changes)
    return cluster_from_document(document, f"stacks/Pulumi.{stack}.yaml")


def build(
    monitor: RecordingMonitor, cluster: config.Cluster, name: str | None = None, **args: Any
) -> Cluster:
    """The program's Cluster component for `cluster` (kubeconfig given on Kubernetes)."""
    monitor.mocks.cluster = cluster
    if cluster.scheduler == "kubernetes":
        args.setdefault("kubeconfig", pulumi.Output.secret(FAKE_KUBECONFIG))
    return Cluster(name or cluster.name, ClusterArgs(cluster=cluster, **args))


def roles_copy(tmp: Path) -> Path:
    """A copy of roles/ to change without touching the real one."""
    import shutil

    target = tmp / "roles"
    shutil.copytree(REPO / "roles", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target
