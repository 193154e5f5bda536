"""SharedStorage: the shared filesystem on every host, and on Kubernetes a claim on it."""

from __future__ import annotations

from typing import Any

import pulumi

from components.kube import manifest_resource
from components.stage import StageArgs, stage_playbook
from kiln.kubernetes.objects import datasets_volume


class SharedStorage(pulumi.ComponentResource):
    """The `shared_storage` role on every host; on Kubernetes an NFS volume and claim."""

    hosts: pulumi.Output[dict[str, Any]]
    """Ansible's recap per host."""
    hash: pulumi.Output[str]
    """The storage stage's applied hash."""
    claim: pulumi.Output[str] | None
    """Kubernetes stacks with NFS: `<namespace>/<claim>` of the datasets volume."""

    def __init__(
        self, name: str, args: StageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:storage:SharedStorage", name, None, opts)
        cluster = args.cluster
        self.roles = stage_playbook(self, f"{name}-roles", args, "storage")
        self.hosts = self.roles.summary
        self.hash = self.roles.hash
        self.claim = None
        kubernetes = args.kubernetes
        if kubernetes is not None and cluster.storage.kind == "nfs":
            k8s_opts = pulumi.ResourceOptions(parent=self, provider=kubernetes.provider)
            # The claim lives in the Kiln namespace (`cluster.storage` says what to mount).
            volume = kubernetes.namespace.apply(lambda ns: datasets_volume(cluster, ns))
            pv = manifest_resource(
                f"{name}-volume",
                volume.apply(lambda objs: objs[0]),
                k8s_opts,
                kind="PersistentVolume",
                api_version="v1",
            )
            manifest_resource(
                f"{name}-claim",
                volume.apply(lambda objs: objs[1]),
                pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[pv])),
                kind="PersistentVolumeClaim",
                api_version="v1",
            )
            self.claim = volume.apply(
                lambda objs: f"{objs[1]['metadata']['namespace']}/{objs[1]['metadata']['name']}"
            )
        elif kubernetes is not None and cluster.storage.kind == "glusterfs":
            # The in-tree glusterfs volume plugin was removed in Kubernetes 1.26.
            pulumi.log.warn(
                f"{name}: glusterfs is mounted on the hosts only (no Kubernetes volume)"
            )
        self.register_outputs({"hosts": self.hosts, "hash": self.hash, "claim": self.claim})
