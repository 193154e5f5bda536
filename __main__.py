"""The Pulumi program: read the stack's `kiln:*` config into the one model, export what it holds.

Resources (node pools, provisioning, certification) are built by components
in `components/`; this file stays a short list of calls.
"""

import pulumi

from kiln.stack import cluster_from_keys

config = pulumi.Config("kiln")
cluster = cluster_from_keys(
    {"cluster": config.require_object("cluster")}, f"stack {pulumi.get_stack()}"
)

pulumi.export("cluster", cluster.name)
pulumi.export("nodes", {h.name: str(h.address) for h in cluster.hosts})
