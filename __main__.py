"""The Pulumi program: read the stack's `kiln:*` config, build one Cluster, export its outputs.

Config keys: `kiln:cluster` (the model in kiln/config.py; SSH keys inside it
are Pulumi secrets) and `kiln:kubeconfig` (secret, Kubernetes stacks). Both go
through `kiln.stack.cluster_from_keys`, the checks `kiln config check` runs.
"""

import pulumi
import pulumi.runtime.config

from components.cluster import Cluster, ClusterArgs, stack_outputs
from kiln.errors import KilnError
from kiln.stack import ConfigError, cluster_from_keys


def _kiln_keys() -> set[str]:
    """The `kiln:*` keys this stack sets (without the prefix), however the engine passed them."""
    every = set(pulumi.runtime.config.CONFIG.get()) | set(
        pulumi.runtime.config.get_config_env() or {}
    )
    return {k.removeprefix("kiln:") for k in every if k.startswith("kiln:")}


config = pulumi.Config("kiln")
try:
    # require_object gives plain text even for secret values; ClusterArgs marks
    # every secret field of the model (SSH keys) as a Pulumi secret again.
    kubeconfig = config.get_secret("kubeconfig")
    keys = {"cluster": config.require_object("cluster")}
    if kubeconfig is not None:
        keys["kubeconfig"] = "(a Pulumi secret)"  # its presence is checked, never its text
    # Every other `kiln:*` key is refused as the CLI refuses it (a typo, or a moved key).
    keys.update({key: None for key in _kiln_keys() - {"cluster", "kubeconfig"}})
    args = ClusterArgs(
        cluster=cluster_from_keys(keys, f"stack {pulumi.get_stack()}"), kubeconfig=kubeconfig
    )
    cluster = Cluster(args.cluster.name, args)
except (ConfigError, KilnError) as exc:
    raise pulumi.RunError(str(exc)) from None

for key, value in stack_outputs(cluster).items():
    pulumi.export(key, value)
