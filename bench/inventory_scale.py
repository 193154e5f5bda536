"""Cost of the CLI's provisioning bookkeeping as a pool grows: 64, 256 and 1,024 hosts.

What `kiln provision` and `kiln lab up` compute before Ansible starts, on a
static Slurm pool of N hosts: the stack model, the Ansible inventory
(`kiln.inventory.build_inventory`) and the converge hash the no-op skip
compares (`kiln.converge_record.site_digest`, which also hashes every role
file and the validation suite: a fixed cost, reported as the 0-host baseline).
Printed, never asserted: per-host time should stay flat (1024 / 64 per host
near 1.0, i.e. linear; the fixed cost makes small pools look dearer).

    .venv/bin/python bench/inventory_scale.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiln.converge_record import site_digest  # noqa: E402
from kiln.drift import roles_digest  # noqa: E402
from kiln.inventory import access_for, build_inventory  # noqa: E402
from kiln.plays import load_site, role_closure, roles_in  # noqa: E402
from kiln.provision import ROLES_DIR  # noqa: E402
from kiln.runtime_bundle import bundle_digest  # noqa: E402
from kiln.stack import cluster_from_document  # noqa: E402

SIZES = (64, 256, 1024)
REPEATS = 5


def cluster(hosts: int, key: Path):  # noqa: ANN201
    computes = [
        {"name": f"gpu{i:04d}", "address": f"10.{1 + i // 250}.{i % 250}.11"}
        for i in range(hosts - 1)
    ]
    return cluster_from_document(
        {
            "config": {
                "kiln:cluster": {
                    "name": f"scale-{hosts}",
                    "nodePools": [
                        {
                            "name": "fleet",
                            "provider": "static",
                            "ssh": {"privateKeyPath": str(key)},
                            "hosts": [
                                {"name": "ctl", "address": "10.0.0.10", "roles": ["controller"]},
                                *computes,
                            ],
                        }
                    ],
                }
            }
        },
        "bench",
    )


def best_of(action) -> float:  # noqa: ANN001
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        key = Path(directory) / "key"
        key.write_text("bench")

        def fixed() -> None:
            roles_digest(ROLES_DIR, role_closure(roles_in(load_site(ROLES_DIR)), ROLES_DIR))
            bundle_digest()

        baseline = best_of(fixed)
        print(f"fixed cost (hash of every role file and the validation suite): {baseline:.3f} s")
        print(f"{'hosts':>6} {'model ms':>9} {'inventory ms':>13} {'hash ms':>8} {'us/host':>8}")
        per_host = {}
        for hosts in SIZES:
            model = best_of(lambda: cluster(hosts, key))  # noqa: B023
            built = cluster(hosts, key)
            access = access_for(built)
            inventory = best_of(lambda: build_inventory(built, access))  # noqa: B023
            digest = best_of(lambda: site_digest(built, access)) - baseline  # noqa: B023
            per_host[hosts] = (model + inventory + digest) / hosts
            print(
                f"{hosts:>6} {model * 1e3:>9.1f} {inventory * 1e3:>13.1f} {digest * 1e3:>8.1f} "
                f"{per_host[hosts] * 1e6:>8.1f}"
            )
        ratio = per_host[SIZES[-1]] / per_host[SIZES[0]]
        print(f"per-host time {SIZES[-1]} / {SIZES[0]} hosts: {ratio:.2f} (linear: about 1.0)")


if __name__ == "__main__":
    main()
