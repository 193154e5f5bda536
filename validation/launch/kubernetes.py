"""Kubernetes manifests for running a validation module as an indexed Job.

There is no API client here (the node-side package has only torch): the
manifests are plain dicts for ``kubectl apply`` or pulumi-kubernetes.

Shape: a headless Service gives every pod a stable DNS name
(``<job>-<index>.<service>``); an indexed Job runs one pod per node, each
running ``torchrun`` with a static rendezvous on pod 0. The node rank is the
pod's completion index. ``activeDeadlineSeconds`` bounds the whole run even if
a process ignores its own timeouts.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from validation.envvars import HOST_NAME_ENV
from validation.launch.base import RENDEZVOUS_PORTS, HostSpec, Launcher, LaunchResult

# Pod host names are "<job>-<index>" and must be DNS labels (63 chars), so the
# job name leaves room for the index.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$")
_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class KubernetesLauncher(Launcher):
    """Renders a headless Service plus an indexed batch/v1 Job for a validation run."""

    def __init__(
        self,
        image: str,
        namespace: str = "default",
        gpus_per_node: int = 0,
        procs_per_node: int | None = None,
        active_deadline_s: int = 3600,
        master_port: int = RENDEZVOUS_PORTS[0],
        service_account: str | None = None,
        image_pull_policy: str = "IfNotPresent",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {gpus_per_node}")
        if active_deadline_s < 1:
            raise ValueError(f"active_deadline_s must be positive, got {active_deadline_s}")
        self.image = image
        self.namespace = namespace
        self.gpus_per_node = gpus_per_node
        # One process per GPU; on CPU-only nodes one process per pod.
        self.procs_per_node = procs_per_node or max(1, gpus_per_node)
        self.active_deadline_s = active_deadline_s
        self.master_port = master_port
        self.service_account = service_account
        self.image_pull_policy = image_pull_policy
        self.labels = dict(labels or {})

    def launch(
        self,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec],
        env: Mapping[str, str] | None = None,
    ) -> LaunchResult:
        """Not available: this package has no Kubernetes API client.

        Apply :meth:`render`'s manifests with ``kubectl apply -f`` or
        pulumi-kubernetes, then read the pods' logs.
        """
        raise NotImplementedError(
            "KubernetesLauncher cannot talk to an API server; apply the manifests from "
            "render() with kubectl or pulumi-kubernetes"
        )

    def render(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec] | int,
        env: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """``[Service, Job]`` running ``module`` on one pod per host.

        ``hosts`` is either the node list (pods are pinned to those node
        names, one per node) or a node count (the scheduler chooses).
        """
        return [self.render_service(name), self.render_job(name, module, args, hosts, env)]

    def render_service(self, name: str) -> dict[str, Any]:
        """Headless Service that gives each Job pod a DNS name for the rendezvous."""
        _check_name(name)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": self.namespace, "labels": self._labels(name)},
            "spec": {
                "clusterIP": "None",
                "selector": {"kiln.dev/run": name},
                # Pods must resolve each other before they are Ready: the
                # rendezvous is what makes them ready.
                "publishNotReadyAddresses": True,
                "ports": [{"name": "rendezvous", "port": self.master_port, "protocol": "TCP"}],
            },
        }

    def render_job(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec] | int,
        env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Indexed Job with one pod per node, each running torchrun for ``module``."""
        _check_name(name)
        node_names: list[str] = []
        if isinstance(hosts, int):
            nodes = hosts
        else:
            nodes = len(hosts)
            node_names = [h.name for h in hosts]
            host_envs = {tuple(sorted(h.env.items())) for h in hosts}
            if len(host_envs) > 1:
                # One pod template serves every index, so env cannot differ per host.
                raise ValueError("HostSpec.env must be the same for every host on Kubernetes")
            env = {**(env or {}), **(hosts[0].env if hosts else {})}
        if nodes < 1:
            raise ValueError("need at least one node")

        container_env: list[dict[str, Any]] = [
            {
                "name": "NODE_RANK",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{_INDEX_ANNOTATION}']"}
                },
            },
            # Errors name the Kubernetes node a rank ran on.
            {"name": HOST_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MASTER_ADDR", "value": f"{name}-0.{name}"},
            {"name": "MASTER_PORT", "value": str(self.master_port)},
        ]
        container_env += [{"name": k, "value": str(v)} for k, v in sorted((env or {}).items())]

        command = [
            "torchrun",
            f"--nnodes={nodes}",
            f"--nproc-per-node={self.procs_per_node}",
            "--node-rank=$(NODE_RANK)",  # expanded by the kubelet from the env above
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
            "-m",
            module,
            *args,
        ]
        container: dict[str, Any] = {
            "name": "validation",
            "image": self.image,
            "imagePullPolicy": self.image_pull_policy,
            "command": command,
            "env": container_env,
            "ports": [{"name": "rendezvous", "containerPort": self.master_port}],
            # NCCL and gloo use shared memory between local ranks; the
            # container default of 64 MiB is too small.
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        }
        if self.gpus_per_node > 0:
            gpus = str(self.gpus_per_node)
            container["resources"] = {
                "limits": {"nvidia.com/gpu": gpus},
                "requests": {"nvidia.com/gpu": gpus},
            }

        pod_spec: dict[str, Any] = {
            "subdomain": name,  # with the headless Service: <job>-<index>.<name> resolves
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
            "affinity": {
                # One pod per node: two ranks groups on one node would share its GPUs.
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": {"kiln.dev/run": name}},
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            },
        }
        if node_names:
            pod_spec["affinity"]["nodeAffinity"] = {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": node_names,
                                }
                            ]
                        }
                    ]
                }
            }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account

        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": self._labels(name),
                "annotations": {"kiln.dev/command": shlex.join(["python", "-m", module, *args])},
            },
            "spec": {
                "completionMode": "Indexed",
                "completions": nodes,
                "parallelism": nodes,
                # A distributed run cannot continue with a rank missing; retrying
                # one pod alone would only hang in the rendezvous.
                "backoffLimit": 0,
                "activeDeadlineSeconds": self.active_deadline_s,
                "template": {
                    "metadata": {"labels": self._labels(name)},
                    "spec": pod_spec,
                },
            },
        }

    def _labels(self, name: str) -> dict[str, str]:
        return {**self.labels, "app.kubernetes.io/name": "kiln-validation", "kiln.dev/run": name}


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"run name {name!r} must be a DNS label of at most 52 characters "
            "(lowercase letters, digits, '-'), so that '<name>-<index>' stays a valid pod host name"
        )
