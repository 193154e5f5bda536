"""Quick certification on the lab: wall time per phase, busbw spread over healthy runs,
and what isolation costs (on the lab and on the simulated fabric).

- healthy: RUNS quick certifications of the lab stack; each one's wall time and
  phases, its headline busbw, and whether the `lab-cpu` baseline passed it
  (target: under 5 minutes each, no false fail). The spread sets lab-cpu's
  tolerance.
- throttled: one compute capped at half the healthy median (tc tbf, both
  ways): the verdict, the culprit named, the isolation runs and rounds.
- simulated: bench/certify_sim.py's table for N = 8, 64, 1,024.

Printed, never asserted. Needs the lab up and provisioned (`kiln lab up`):

    .venv/bin/python bench/certify.py [--stack lab] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import certify_sim  # noqa: E402
from kiln.certification.run import Request, certify_stack, headline  # noqa: E402
from kiln.lab.layout import LabLayout  # noqa: E402
from kiln.lab.throttle import throttle, unthrottle  # noqa: E402
from kiln.stack import load_stack  # noqa: E402


def certify_once(stack: str, out: Path):  # noqa: ANN201
    cluster = load_stack(stack)
    start = time.monotonic()
    result = certify_stack(cluster, Request(stack, out, publish=False))
    return result, time.monotonic() - start


def phases(result) -> str:  # noqa: ANN001
    return ", ".join(f"{p.name} {p.wall_s:.1f}s" for p in result.phases if p.wall_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cluster = load_stack(args.stack)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-certify-"))

    print(f"== healthy: {args.runs} quick certifications of stack {args.stack}")
    values, walls, fails = [], [], 0
    for i in range(args.runs):
        result, wall = certify_once(args.stack, work / f"healthy-{i}")
        busbw = headline(result)
        values.append(busbw or 0.0)
        walls.append(wall)
        fails += result.status in ("fail", "error")
        print(f"  run {i + 1}: {result.status:5s} busbw {busbw or 0:.3f} GB/s  "
              f"wall {wall:5.1f} s  ({phases(result)})")  # fmt: skip
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else float("nan")
    print(f"  busbw min/median/max {min(values):.3f} / {median:.3f} / {max(values):.3f} GB/s, "
          f"spread {100 * spread:.0f}% of the median; false fails {fails} of {args.runs} "
          f"(target 0); wall max {max(walls):.0f} s (target < 300 s)")  # fmt: skip

    computes = [h.name for h in cluster.hosts if "compute" in h.roles]
    node = computes[0]
    rate = max(100, int(median * 8000 / 2))  # half the healthy busbw, in Mbit/s
    print(f"== throttled: {node} capped at {rate} Mbit/s both ways (half the healthy median)")
    layout = LabLayout(cluster.lab_settings.id)
    throttle(layout, node, rate)
    try:
        result, wall = certify_once(args.stack, work / "throttled")
    finally:
        unthrottle(layout, node)
    iso = result.isolation
    print(f"  verdict {result.status} in {wall:.1f} s ({phases(result)}); busbw "
          f"{headline(result) or 0:.3f} GB/s")  # fmt: skip
    print(f"  culprits: {[(c.kind, c.hosts) for c in result.culprits]} (expected node {node})")
    if iso:
        print(f"  isolation: {len(iso.runs)} run(s) in {iso.rounds} round(s) after the "
              "cluster-wide run (lab runs are sequential: its nodes share 2 CPUs)")  # fmt: skip
    print(f"  reports: {work}")

    print("== simulated fabric")
    certify_sim.main()


if __name__ == "__main__":
    main()
