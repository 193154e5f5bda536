"""How long until the 3-node lab is usable: cold (root filesystem built) and warm.

"Usable" means every node answers SSH with systemd `running`. Cold builds
the Debian rootfs in an empty cache; warm boots the same stack again from
nothing but the cached rootfs. Printed, never asserted. Run as root:

    .venv/bin/python bench/lab_boot.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from kiln.lab.lifecycle import Lab  # noqa: E402
from kiln.stack import cluster_from_document, stack_file  # noqa: E402

# Its own id and subnet: the bench never disturbs a lab you keep up.
BENCH_LAB = {"id": "kb", "subnet": "10.77.92.0/24"}


def bench_cluster():
    """The embedded lab stack, moved to the bench's own lab id and subnet."""
    path = stack_file("lab", Path(__file__).resolve().parent.parent / "stacks")
    document = yaml.safe_load(path.read_text())
    document["config"]["kiln:cluster"]["lab"] = BENCH_LAB
    return cluster_from_document(document, str(path))


def timed_up(lab: Lab) -> float:
    start = time.perf_counter()
    outcome = lab.up()
    elapsed = time.perf_counter() - start
    assert all(n.systemd == "running" for n in outcome.nodes), outcome.nodes
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cache-") as cache:
        os.environ["KILN_CACHE_DIR"] = cache
        lab = Lab(bench_cluster())
        lab.down()
        try:
            cold = timed_up(lab)
            lab.down()
            warm = timed_up(lab)
            start = time.perf_counter()
            again = lab.up()
            noop = time.perf_counter() - start
        finally:
            lab.down()
    print(f"nodes: {len(lab.hosts)}")
    print(f"cold (rootfs build + boot): {cold:7.1f} s")
    print(f"warm (cached rootfs, boot): {warm:7.1f} s")
    print(f"second up (no change):      {noop:7.1f} s  changes={len(again.changes)}")
    print(f"warm / cold ratio:          {warm / cold:7.3f}")


if __name__ == "__main__":
    main()
