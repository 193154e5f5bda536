"""Provisioning time on the lab: cold vs warm, and 1 vs 3 compute nodes.

Cold: `roles/site.yml` on freshly booted nodes (packages installed, services
configured). Warm: the same run again, with nothing to change. Each is
measured for a lab of one controller plus 1 compute node and plus 3 compute
nodes. Targets: warm <= 0.3 x cold; 3 nodes <= 1.5 x 1 node. Printed, never
asserted. Run as root (it brings up its own labs):

    .venv/bin/python bench/provision.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiln.lab.lifecycle import Lab, teardown  # noqa: E402
from kiln.provision import provision  # noqa: E402
from kiln.stack import cluster_from_document  # noqa: E402


def lab_with(computes: int) -> Lab:
    hosts = [{"name": "pctl", "roles": ["controller", "storage"]}]
    hosts += [{"name": f"pc{i}"} for i in range(1, computes + 1)]
    cluster = cluster_from_document(
        {
            "config": {
                "kiln:cluster": {
                    "name": f"kiln-bench-prov{computes}",
                    "lab": {"id": f"kpb{computes}", "subnet": f"10.77.{86 - computes}.0/24"},
                    "nodePools": [{"name": "lab", "provider": "lab", "hosts": hosts}],
                    "storage": {"kind": "glusterfs"},
                }
            }
        },
        "bench",
    )
    return Lab(cluster)


def timed(lab: Lab) -> tuple[float, int]:
    start = time.perf_counter()
    result = provision(lab.cluster)
    elapsed = time.perf_counter() - start
    assert result.succeeded, result.errors
    return elapsed, result.changed


def main() -> None:
    rows = {}
    for computes in (1, 3):
        lab = lab_with(computes)
        teardown(lab.layout)
        try:
            lab.up()
            cold, cold_changes = timed(lab)
            warm, warm_changes = timed(lab)
        finally:
            teardown(lab.layout)
        rows[computes] = (cold, warm)
        print(
            f"{computes} compute node(s) + controller: cold {cold:6.1f} s ({cold_changes} "
            f"changes), warm {warm:6.1f} s ({warm_changes} changes), "
            f"warm/cold {warm / cold:.2f} (target <= 0.3)"
        )
    print(f"cold 3 nodes / 1 node: {rows[3][0] / rows[1][0]:.2f} (target <= 1.5)")
    print(f"warm 3 nodes / 1 node: {rows[3][1] / rows[1][1]:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
