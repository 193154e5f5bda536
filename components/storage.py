"""SharedStorage: the shared filesystem on every host, and on Kubernetes a claim on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import manifests
from components.kube import manifest_resource
from components.provisioning import Provisioning, stage_playbook
from kiln.config import Cluster
from kiln.plays import DriverOwner
from kiln.provision import ROLES_DIR


@dataclass
class SharedStorageArgs:
    """Inputs of SharedStorage."""

    cluster: Cluster
    """The stack config; `storage` says what to mount."""
    provisioning: Provisioning
    """Runs after the nodes are provisioned."""
    facts_digest: pulumi.Input[str]
    """Hash of every host's facts (a reinstalled host gets its mount again)."""
    secrets: pulumi.Input[Mapping[str, Any]]
    """Playbook secrets (SSH keys), a Pulumi secret."""
    k8s_provider: k8s.Provider | None = None
    """Kubernetes stacks: the explicit provider for the volume and its claim."""
    namespace: pulumi.Input[str] | None = None
    """Kubernetes stacks: where the `datasets` claim lives (the Kiln namespace)."""
    roles_dir: Path = ROLES_DIR
    """The roles tree hashed and applied."""
    driver_owner: DriverOwner = "roles"
    """Who installs the GPU driver (decides which roles the plays exclude)."""


class SharedStorage(pulumi.ComponentResource):
    """The `shared_storage` role on every host; on Kubernetes an NFS volume and claim."""

    hosts: pulumi.Output[dict[str, Any]]
    """Ansible's recap per host."""
    hash: pulumi.Output[str]
    """The storage stage's applied hash."""
    claim: pulumi.Output[str] | None
    """Kubernetes stacks with NFS: `<namespace>/<claim>` of the datasets volume."""

    def __init__(
        self, name: str, args: SharedStorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:storage:SharedStorage", name, None, opts)
        cluster = args.cluster
        self.roles = stage_playbook(
            f"{name}-roles",
            cluster,
            "storage",
            roles_dir=args.roles_dir,
            driver_owner=args.driver_owner,
            facts_digest=args.facts_digest,
            secrets=args.secrets,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.provisioning]),
        )
        self.hosts = self.roles.summary
        self.hash = self.roles.hash
        self.claim = None
        if args.k8s_provider is not None and cluster.storage.kind == "nfs":
            if args.namespace is None:
                raise ValueError("SharedStorageArgs.namespace is required on Kubernetes")
            k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
            volume = pulumi.Output.from_input(args.namespace).apply(
                lambda ns: manifests.datasets_volume(cluster, ns)
            )
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
        elif args.k8s_provider is not None and cluster.storage.kind == "glusterfs":
            # The in-tree glusterfs volume plugin was removed in Kubernetes 1.26.
            pulumi.log.warn(
                f"{name}: glusterfs is mounted on the hosts only (no Kubernetes volume)"
            )
        self.register_outputs({"hosts": self.hosts, "hash": self.hash, "claim": self.claim})
