"""Time and peak memory to evaluate the Pulumi program under mocks, for 8, 128 and 1,024 nodes.

Each size runs in its own process (the Pulumi runtime is process-global):
a prod-like stack (Kubernetes, InfiniBand GPU pool, NFS, monitoring) with one
controller and N-1 GPU hosts is built under the runtime mocks of
`components.mocks` until every resource is registered. Imports (pulumi,
pulumi-kubernetes, the program's modules; no torch: the Kubernetes launcher
that renders the certification Job does not import it) happen before the
clock starts and are reported as the baseline. Wall and CPU time are both
printed: on a busy machine the wall clock also counts other processes.
Printed, never asserted; the ratio 1024/128 should stay <= 10 (8x the nodes).

    python bench/pulumi_program.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (8, 128, 1024)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stack(nodes: int) -> dict[str, Any]:
    """`kiln:cluster` of a prod-like stack with `nodes` hosts in all."""
    gpu_hosts = [
        {"name": f"gpu{i:04d}", "address": f"10.{1 + i // 250}.{i % 250}.11"}
        for i in range(nodes - 1)
    ]
    ssh = {"user": "ubuntu", "privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nbench\n"}
    return {
        "name": f"bench-{nodes}",
        "nodePools": [
            {
                "name": "ctl",
                "provider": "static",
                "hosts": [{"name": "ctl01", "address": "10.0.0.5", "roles": ["controller"]}],
                "ssh": ssh,
            },
            {
                "name": "h100",
                "provider": "static",
                "hosts": gpu_hosts,
                "ssh": ssh,
                "gpu": {
                    "model": "H100-SXM5-80GB",
                    "perNode": 8,
                    "driver": "550.127.08",
                    "nccl": "2.21.5",
                    "fabricManager": True,
                },
                "rdma": {"fabric": "infiniband", "hcas": [f"mlx5_{i}" for i in range(8)]},
            },
        ],
        "storage": {"kind": "nfs", "server": "10.0.0.20", "export": "/datasets"},
        "monitoring": {"dcgmExporter": True},
        "scheduler": "kubernetes",
    }


def child(nodes: int) -> dict[str, float]:
    """Build the program for one size in this process; timings and memory."""
    import pulumi

    from components.cluster import Cluster, ClusterArgs
    from components.mocks import new_monitor, settled
    from kiln.stack import cluster_from_keys

    baseline = _rss_mib()
    monitor = new_monitor(f"bench{nodes}")
    result: dict[str, float] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output:
        start, cpu_start = time.perf_counter(), time.process_time()
        cluster = cluster_from_keys({"cluster": stack(nodes)}, "bench")
        monitor.mocks.cluster = cluster
        component = Cluster(
            cluster.name, ClusterArgs(cluster, kubeconfig=pulumi.Output.secret("kubeconfig"))
        )
        built = time.perf_counter()

        def done(_: Any) -> None:
            result["construct_s"] = built - start
            result["total_s"] = time.perf_counter() - start
            result["cpu_s"] = time.process_time() - cpu_start
            result["resources"] = len(monitor.registrations)

        return settled(component).apply(done)

    run()
    # ru_maxrss is KiB on Linux.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["baseline_rss_mib"] = baseline
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
        return
    rows = {}
    for nodes in SIZES:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(nodes)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        rows[nodes] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"{'nodes':>6} {'resources':>9} {'construct s':>11} {'total s':>8} {'CPU s':>6} "
        f"{'peak RSS MiB':>12} {'over imports':>12}"
    )
    for nodes, r in rows.items():
        print(
            f"{nodes:>6} {int(r['resources']):>9} {r['construct_s']:>11.2f} {r['total_s']:>8.2f} "
            f"{r['cpu_s']:>6.2f} "
            f"{r['peak_rss_mib']:>12.0f} {r['peak_rss_mib'] - r['baseline_rss_mib']:>12.0f}"
        )
    big, mid = rows[1024], rows[128]
    growth = (big["peak_rss_mib"] - big["baseline_rss_mib"]) / max(
        mid["peak_rss_mib"] - mid["baseline_rss_mib"], 1e-9
    )
    print(f"time ratio 1024/128: {big['total_s'] / mid['total_s']:.1f} (target <= 10)")
    # CPU time is what this process spent; wall time also counts other load on the machine.
    print(f"CPU time ratio 1024/128: {big['cpu_s'] / mid['cpu_s']:.1f}")
    print(f"memory ratio 1024/128 (growth over imports): {growth:.1f}")
    print(f"imports (pulumi, pulumi-kubernetes, kiln): {big['baseline_rss_mib']:.0f} MiB RSS")


if __name__ == "__main__":
    main()
