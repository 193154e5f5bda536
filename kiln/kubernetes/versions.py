"""Every version the Kubernetes side of a stack deploys, pinned in this one place.

Bumping one is a one-line change reviewed on its own. The chart versions were
current releases when pinned (GPU Operator and Network Operator from the same
NVIDIA release train); they could not be resolved against the registries from
the development machine (no network), so `pulumi preview` on a stack with
Kubernetes is where a wrong one shows first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    """A Helm chart at a pinned version."""

    chart: str
    version: str
    repository: str | None = None
    """Helm repository URL; None for an `oci://` chart reference."""


GPU_OPERATOR = Chart("gpu-operator", "v25.10.1", "https://helm.ngc.nvidia.com/nvidia")
NETWORK_OPERATOR = Chart("network-operator", "25.10.0", "https://helm.ngc.nvidia.com/nvidia")
NODE_FEATURE_DISCOVERY = Chart(
    "node-feature-discovery",
    "0.17.3",
    "https://kubernetes-sigs.github.io/node-feature-discovery/charts",
)
KUEUE = Chart("oci://registry.k8s.io/kueue/charts/kueue", "0.14.3")
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "76.5.1", "https://prometheus-community.github.io/helm-charts"
)

# The v1 training operator (PyTorchJob) has no Helm chart upstream: its
# standalone kustomize overlay is the supported install.
TRAINING_OPERATOR = (
    "https://github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.3"
)

# NicClusterPolicy component image, released with the Network Operator above.
RDMA_SHARED_DEVICE_PLUGIN = {
    "repository": "nvcr.io/nvidia/mellanox",
    "image": "k8s-rdma-shared-dev-plugin",
    "version": "network-operator-v25.10.0",
}

KUEUE_API = "kueue.x-k8s.io/v1beta1"
NIC_CLUSTER_POLICY_API = "mellanox.com/v1alpha1"

# The image the certification Job runs: `validation/` plus torch. It is not
# published yet; stacks override it (ClusterArgs.validation_image).
VALIDATION_IMAGE = "ghcr.io/kiln-project/kiln-validation:0.1.0"

# Oldest Kubernetes these manifests target; tests validate against it and the
# newest schema kubernetes-validate knows.
KUBERNETES_MIN = "1.31"
