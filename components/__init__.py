"""Pulumi ComponentResources: thin wrappers that turn the config model into resources.

`cluster.Cluster` builds the stack from `nodepool`, `provisioning`, `storage`,
`monitoring`, `platform` and `certification`; `providers` holds the dynamic
resources, `manifests` / `kube` the Kubernetes objects, `versions` every
pinned version. They call into `kiln` for all logic; nothing in `kiln` or
`validation` imports them.
"""
