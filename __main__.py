"""The Pulumi program: read the stack's `kiln:*` config, build one Cluster, export its outputs.

Config keys: `kiln:cluster` (the model in kiln/config.py; SSH keys inside it
are Pulumi secrets), `kiln:kubeconfig` (secret, Kubernetes stacks) and
`kiln:gpuDriverOwner` (`roles` or `operator`, default `roles`).
"""

import pulumi

from components.cluster import Cluster, ClusterArgs, stack_outputs
from kiln.errors import KilnError
from kiln.stack import ConfigError, cluster_from_keys

config = pulumi.Config("kiln")
try:
    # require_object gives plain text even for secret values; ClusterArgs marks
    # every secret field of the model (SSH keys) as a Pulumi secret again.
    args = ClusterArgs(
        cluster=cluster_from_keys(
            {"cluster": config.require_object("cluster")}, f"stack {pulumi.get_stack()}"
        ),
        kubeconfig=config.get_secret("kubeconfig"),
        driver_owner=config.get("gpuDriverOwner") or "roles",
    )
    cluster = Cluster(args.cluster.name, args)
except (ConfigError, KilnError) as exc:
    raise pulumi.RunError(str(exc)) from None

for key, value in stack_outputs(cluster).items():
    pulumi.export(key, value)
