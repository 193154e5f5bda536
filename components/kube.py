"""Kubernetes resources from the plain manifests of `kiln.kubernetes`, and Helm releases.

Every resource here takes its provider from `opts`: the components pass the
stack's explicit provider (built from the kubeconfig secret), never the
ambient ~/.kube/config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from kiln.kubernetes import objects, versions

# Built-in kinds and their typed classes (a CustomResource would lose the schema).
_TYPED = {
    "Namespace": k8s.core.v1.Namespace,
    "ConfigMap": k8s.core.v1.ConfigMap,
    "Service": k8s.core.v1.Service,
    "PersistentVolume": k8s.core.v1.PersistentVolume,
    "PersistentVolumeClaim": k8s.core.v1.PersistentVolumeClaim,
    "Job": k8s.batch.v1.Job,
}
# What each kind carries besides metadata (custom resources: spec).
_BODY_KEYS = {"Namespace": (), "ConfigMap": ("data",)}


@dataclass(frozen=True)
class KubernetesTarget:
    """Where a Kubernetes stack's resources go: its explicit provider and the Kiln namespace."""

    provider: k8s.Provider
    """Built from the stack's kubeconfig secret."""
    namespace: pulumi.Output[str]
    """The Kiln namespace, known once it exists (so what names it waits for it)."""


def kubernetes_target(
    name: str, kubeconfig: pulumi.Input[str], parent: pulumi.Resource
) -> KubernetesTarget:
    """The stack's provider `<name>-k8s` and the Kiln namespace `<name>-namespace`."""
    provider = k8s.Provider(
        f"{name}-k8s", kubeconfig=kubeconfig, opts=pulumi.ResourceOptions(parent=parent)
    )
    namespace = manifest_resource(
        f"{name}-namespace",
        objects.namespace(objects.KILN_NAMESPACE),
        pulumi.ResourceOptions(parent=parent, provider=provider),
    )
    return KubernetesTarget(provider, namespace.metadata.apply(lambda m: m["name"]))


def manifest_resource(
    name: str,
    manifest: pulumi.Input[Mapping[str, Any]],
    opts: pulumi.ResourceOptions,
    *,
    kind: str | None = None,
    api_version: str | None = None,
) -> pulumi.CustomResource:
    """The resource for one manifest; `kind` is needed when the manifest is an Output."""
    if isinstance(manifest, Mapping):
        kind, api_version = manifest["kind"], manifest["apiVersion"]
    if kind is None or api_version is None:
        raise ValueError(f"{name}: give kind and api_version for a manifest known only later")
    body = pulumi.Output.from_input(manifest)
    fields = {"metadata": body.apply(lambda m: m["metadata"])}
    for key in _BODY_KEYS.get(kind, ("spec",)):
        fields[key] = body.apply(lambda m, key=key: m[key])
    if opts.provider is None:
        raise ValueError(f"{name}: Kubernetes resources need the stack's explicit provider")
    typed = _TYPED.get(kind)
    if typed is not None:
        return typed(name, **fields, opts=opts)
    return k8s.apiextensions.CustomResource(
        name, api_version=api_version, kind=kind, **fields, opts=opts
    )


def helm_release(
    name: str,
    chart: versions.Chart,
    namespace: pulumi.Input[str],
    values: Mapping[str, Any],
    opts: pulumi.ResourceOptions,
    timeout_s: int = 600,
) -> k8s.helm.v3.Release:
    """A Helm release of a chart pinned in `kiln.kubernetes.versions`, waited up to `timeout_s`."""
    if opts.provider is None:
        raise ValueError(f"{name}: Kubernetes resources need the stack's explicit provider")
    repository = k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository) if chart.repository else None
    return k8s.helm.v3.Release(
        name,
        chart=chart.chart,
        version=chart.version,
        repository_opts=repository,
        namespace=namespace,
        values=dict(values),
        atomic=True,  # a failed install rolls back instead of leaving half a release
        cleanup_on_fail=True,
        timeout=timeout_s,
        opts=opts,
    )
