"""Pulumi ComponentResources: thin wrappers that turn the config model into resources.

`cluster.Cluster` builds the stages `kiln.deployment` plans from `nodepool`,
`provisioning`, `storage` and `monitoring` (both take `stage.StageArgs`),
`platform` and `certification`; `providers` holds the dynamic resources,
`kube` turns the plain Kubernetes objects of `kiln.kubernetes` into
resources, `mocks` holds the Pulumi runtime mocks tests/pulumi and
bench/pulumi_program.py run the program under. They call into `kiln` for all
logic; nothing in `kiln` or `validation` imports them.
"""
