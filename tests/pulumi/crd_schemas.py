"""JSON schemas for the custom resources Kiln creates, since kubernetes-validate knows built-ins only.

Kiln-maintained subsets of the upstream CRDs at the versions pinned in
kiln/kubernetes/versions.py (Kueue 0.14 `kueue.x-k8s.io/v1beta1`, Network Operator
25.10 `mellanox.com/v1alpha1`): every field Kiln sets, with upstream's types,
enums and required fields. Unknown fields are rejected where Kiln writes, so a
misspelt field fails here instead of being pruned by the API server.
"""

from __future__ import annotations

from typing import Any

QUANTITY = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"},
    ]
}
DNS_SUBDOMAIN = {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
DNS_LABEL = {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
RESOURCE_NAME = {"type": "string", "pattern": r"^([a-z0-9.-]+/)?[a-zA-Z0-9_.-]+$"}


def _metadata(namespaced: bool) -> dict[str, Any]:
    properties = {
        "name": DNS_SUBDOMAIN,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    }
    if namespaced:
        properties["namespace"] = DNS_LABEL
    return {
        "type": "object",
        "required": ["name", "namespace"] if namespaced else ["name"],
        "properties": properties,
        "additionalProperties": False,
    }


def _object(api_version: str, kind: str, spec: dict[str, Any], namespaced: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _metadata(namespaced),
            "spec": spec,
        },
        "additionalProperties": False,
    }


_RESOURCE_QUOTA = {
    "type": "object",
    "required": ["name", "nominalQuota"],
    "properties": {
        "name": RESOURCE_NAME,
        "nominalQuota": QUANTITY,
        "borrowingLimit": QUANTITY,
        "lendingLimit": QUANTITY,
    },
    "additionalProperties": False,
}

_CLUSTER_QUEUE_SPEC = {
    "type": "object",
    "properties": {
        "namespaceSelector": {"type": "object"},
        "queueingStrategy": {"enum": ["StrictFIFO", "BestEffortFIFO"]},
        "cohort": {"type": "string"},
        "resourceGroups": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "required": ["coveredResources", "flavors"],
                "properties": {
                    "coveredResources": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 64,
                        "items": RESOURCE_NAME,
                    },
                    "flavors": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 16,
                        "items": {
                            "type": "object",
                            "required": ["name", "resources"],
                            "properties": {
                                "name": DNS_SUBDOMAIN,
                                "resources": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 64,
                                    "items": _RESOURCE_QUOTA,
                                },
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

_RDMA_SHARED_DEVICE_PLUGIN = {
    "type": "object",
    "required": ["image", "repository", "version"],
    "properties": {
        "image": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._/-]*$"},
        "repository": {"type": "string", "minLength": 1},
        "version": {"type": "string", "minLength": 1},
        "imagePullSecrets": {"type": "array", "items": {"type": "string"}},
        "config": {"type": "string"},
    },
    "additionalProperties": False,
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("kueue.x-k8s.io/v1beta1", "ResourceFlavor"): _object(
        "kueue.x-k8s.io/v1beta1",
        "ResourceFlavor",
        {
            "type": "object",
            "properties": {
                "nodeLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                "nodeTaints": {"type": "array"},
                "tolerations": {"type": "array"},
            },
            "additionalProperties": False,
        },
        namespaced=False,
    ),
    ("kueue.x-k8s.io/v1beta1", "ClusterQueue"): _object(
        "kueue.x-k8s.io/v1beta1", "ClusterQueue", _CLUSTER_QUEUE_SPEC, namespaced=False
    ),
    ("kueue.x-k8s.io/v1beta1", "LocalQueue"): _object(
        "kueue.x-k8s.io/v1beta1",
        "LocalQueue",
        {
            "type": "object",
            "required": ["clusterQueue"],
            "properties": {"clusterQueue": DNS_SUBDOMAIN},
            "additionalProperties": False,
        },
        namespaced=True,
    ),
    ("mellanox.com/v1alpha1", "NicClusterPolicy"): _object(
        "mellanox.com/v1alpha1",
        "NicClusterPolicy",
        {
            "type": "object",
            "properties": {"rdmaSharedDevicePlugin": _RDMA_SHARED_DEVICE_PLUGIN},
            "additionalProperties": False,
        },
        namespaced=False,
    ),
}
