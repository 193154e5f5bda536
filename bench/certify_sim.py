"""How many runs isolation needs to find one bad node, on a simulated fabric.

For each cluster size N, a single bad node (half speed, +-10% noise per run,
threshold 0.75 x base): the runs after the cluster-wide run (mean and max over
seeded trials), the rounds (runs that go at the same time count once), how often
exactly the bad node was named, the target 2*log2(N)+1 runs, and what a
pair-based tool needs (N/2 disjoint pairs in round 1, then 2 re-pair runs in
round 2). Printed, never asserted. No hosts needed:

    .venv/bin/python bench/certify_sim.py
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiln.certification.isolation import isolate  # noqa: E402
from kiln.certification.simulate import make_fabric, score  # noqa: E402

BASE_GBPS = 100.0


def simulated_isolation_table(ns: Sequence[int] = (8, 64, 1024), trials: int = 100) -> list[dict]:
    """One row per N: isolation cost for a single bad node over `trials` seeded fabrics."""
    rows = []
    for n in ns:
        runs, rounds, exact = [], [], 0
        for seed in range(trials):
            fabric, truth = make_fabric(n, bad_nodes=1, seed=seed, base_gbps=BASE_GBPS)
            iso = isolate(fabric.hosts, fabric.run_round, 0.75 * BASE_GBPS)
            runs.append(len(iso.runs))
            rounds.append(iso.rounds)
            exact += bool(score(iso, truth)["exact"])
        rows.append(
            {
                "n": n,
                "trials": trials,
                "runs_mean": statistics.fmean(runs),
                "runs_max": max(runs),
                "rounds_mean": statistics.fmean(rounds),
                "rounds_max": max(rounds),
                "exact_rate": exact / trials,
                "target_runs": 2 * math.ceil(math.log2(n)) + 1,
                "pair_tool_runs": math.ceil(n / 2) + 2,
                "pair_tool_rounds": 2,
            }
        )
    return rows


def main() -> None:
    rows = simulated_isolation_table()
    header = (
        f"{'N':>6} {'trials':>6} {'runs mean':>9} {'runs max':>8} {'rounds':>6} "
        f"{'exact':>6} {'target':>6} {'pair-tool runs':>14} {'pair-tool rounds':>16}"
    )
    print("isolation of one bad node (factor 0.5, noise +-10%), runs after the cluster-wide run")
    print(header)
    for r in rows:
        print(
            f"{r['n']:>6} {r['trials']:>6} {r['runs_mean']:>9.2f} {r['runs_max']:>8} "
            f"{r['rounds_mean']:>6.2f} {r['exact_rate']:>6.0%} {r['target_runs']:>6} "
            f"{r['pair_tool_runs']:>14} {r['pair_tool_rounds']:>16}"
        )


if __name__ == "__main__":
    main()
