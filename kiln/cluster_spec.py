"""The stack config as it travels between the Pulumi program and its providers.

Dynamic providers run in another process and get only JSON-able inputs, so
each resource carries the stack's `kiln:cluster` value as a `spec` with every
secret taken out; the secrets travel separately, as Pulumi secrets
(`kiln.keyfiles` puts them back as files for one call).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kiln.config import Cluster


def cluster_spec(cluster: Cluster) -> str:
    """The stack config as JSON text, with every secret removed: the SSH private keys and
    the monitoring's basic auth password (the key out, not a masked value in its place).

    Text rather than nested data: resources carry it only to rebuild the model
    in their provider, and one string costs Pulumi one value where a 1,024-host
    mapping would cost thousands of nested Outputs.
    """
    return json.dumps(
        cluster.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            exclude={
                "node_pools": {"__all__": {"ssh": {"private_key"}}},
                "monitoring": {"basic_auth": {"password"}},
            },
        ),
        sort_keys=True,
    )


def cluster_from_spec(spec: str | Mapping[str, Any]) -> Cluster:
    """The config model back from `cluster_spec`.

    The spec was dumped from a model that passed `kiln.stack`'s checks (lab
    addresses included), so only the model is rebuilt; the cross-pool checks
    would refuse static pools whose keys are, rightly, not in it.
    """
    document = json.loads(spec) if isinstance(spec, str) else spec
    return Cluster.model_validate(document)
