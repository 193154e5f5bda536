"""Provisioning time on the lab: cold, warm and no-op, for 1 and 3 compute nodes.

Cold: `roles/site.yml` on freshly booted nodes (the root filesystem and
wheelhouse caches on this machine are warm, the nodes start empty). Warm: the
same run again, with nothing to change: every host is still checked. No-op:
`kiln lab up` through the CLI right after, which finds the last converge
still holding and skips it. Each is measured for a lab of one controller plus
1 compute node and plus 3 compute nodes. Printed, never asserted:

- warm / cold (target <= 0.3), 3 nodes / 1 node cold and warm (target <= 1.5),
  no-op `lab up` in seconds (target <= 15);
- the 10 tasks that took longest in total over all hosts, cold and warm, so a
  missed target shows where the time goes.

Run as root (it brings up its own labs, ids kpb1 and kpb3, and removes them):

    .venv/bin/python bench/provision.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kiln.converge_record import provision_and_record  # noqa: E402
from kiln.lab.lifecycle import Lab, teardown  # noqa: E402
from kiln.provision import ProvisionResult  # noqa: E402
from kiln.stack import load_stack  # noqa: E402

STACK = "bench"
TOP = 10


def stack_dir(computes: int) -> Path:
    """A stack file of its own: the no-op run goes through the real CLI."""
    hosts = [{"name": "pctl", "roles": ["controller", "storage"]}]
    hosts += [{"name": f"pc{i}"} for i in range(1, computes + 1)]
    cluster = {
        "name": f"kiln-bench-prov{computes}",
        "lab": {"id": f"kpb{computes}", "subnet": f"10.77.{86 - computes}.0/24"},
        "nodePools": [{"name": "lab", "provider": "lab", "hosts": hosts}],
        "storage": {"kind": "glusterfs"},
    }
    directory = Path(tempfile.mkdtemp(prefix="kiln-bench-provision-"))
    (directory / f"Pulumi.{STACK}.yaml").write_text(
        yaml.safe_dump({"config": {"kiln:cluster": cluster}})
    )
    return directory


def timed(lab: Lab) -> tuple[float, ProvisionResult]:
    start = time.perf_counter()
    result = provision_and_record(lab.cluster)
    elapsed = time.perf_counter() - start
    if not result.succeeded:
        raise SystemExit(f"provisioning failed: {result.errors} (artifacts: {result.artifacts})")
    return elapsed, result


def noop_lab_up(stacks: Path) -> str:
    """Seconds of a second `kiln lab up`, or why it did not skip the converge."""
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "kiln", "lab", "up", "--stack", STACK, "--stacks-dir", str(stacks)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if run.returncode != 0 or "provisioning skipped" not in run.stdout:
        said = [line for line in run.stdout.splitlines() if line.startswith("provisioning")]
        return f"did not skip ({'; '.join(said) or run.stderr.strip()[-300:]})"
    return f"{elapsed:5.1f} s"


def top_tasks(label: str, result: ProvisionResult) -> None:
    print(f"  top {TOP} tasks {label} (seconds, summed over hosts):")
    ranked = sorted(result.task_seconds.items(), key=lambda item: item[1], reverse=True)
    for task, seconds in ranked[:TOP]:
        print(f"    {seconds:7.1f}  {task}")


def main() -> None:
    rows = {}
    for computes in (1, 3):
        stacks = stack_dir(computes)
        lab = Lab(load_stack(STACK, stacks))
        teardown(lab.layout)
        try:
            lab.up()
            cold, cold_result = timed(lab)
            warm, warm_result = timed(lab)
            noop = noop_lab_up(stacks)
        finally:
            teardown(lab.layout)
        rows[computes] = (cold, warm)
        print(
            f"{computes} compute node(s) + controller: cold {cold:6.1f} s "
            f"({cold_result.changed} changes), warm {warm:6.1f} s ({warm_result.changed} "
            f"changes), warm/cold {warm / cold:.2f} (target <= 0.3), no-op lab up {noop} "
            "(target <= 15 s)"
        )
        top_tasks("cold", cold_result)
        top_tasks("warm", warm_result)
    print(f"cold 3 nodes / 1 node: {rows[3][0] / rows[1][0]:.2f} (target <= 1.5)")
    print(f"warm 3 nodes / 1 node: {rows[3][1] / rows[1][1]:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
