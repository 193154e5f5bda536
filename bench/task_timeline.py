"""Where a provisioning run's wall time went, task by task, from ansible-runner's events.

With the linear strategy a task ends when its slowest host does, so a run's
wall time is, over its tasks, the sum of three parts:

- the slowest host's time on each task: the hosts' own work (the module on the
  node, its Ansible worker and Mitogen's round trip). It stretches when the
  hosts share CPUs, as every lab node shares this machine's cores;
- the rest of each task: the other hosts starting later than the first
  (Ansible's main process starts one worker after another) or ending later;
- the gaps between tasks and plays: Ansible's main process on its own.

The last two are Ansible's serial part: what one more host costs the run on
any machine, however many CPUs the hosts have. Read from the `job_events`
directory ansible-runner leaves in each run's artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# A host's result for a task, with the start and end the runner's callback records.
RESULTS = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped")


def _instant(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@dataclass(frozen=True)
class Timeline:
    slowest: float
    """Seconds: over the tasks, the sum of each task's slowest host's time on it."""
    within: float
    """Seconds: over the tasks, the sum of each task's span past its slowest host's time."""
    between: float
    """Seconds: the gaps from each task's last host to the next task's start."""
    results: int
    """Host results (one per host and task), skipped ones included."""
    result_seconds: float
    """Their durations, summed."""
    skipped: int

    @property
    def serial(self) -> float:
        """Ansible's serial part: all but the slowest hosts' own time."""
        return self.within + self.between

    @property
    def per_result(self) -> float:
        """Mean seconds one host took on one task."""
        return self.result_seconds / max(self.results, 1)


def read(artifacts: Path) -> Timeline:
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    events.sort(key=lambda event: event["counter"])
    if not events:
        raise ValueError(f"no runner events in {artifacts}")
    starts: dict[str, float] = {}  # task uuid -> when Ansible started it
    hosts: dict[str, list[tuple[float, float]]] = {}  # task uuid -> each host's (start, end)
    skipped = 0
    for event in events:
        data = event.get("event_data", {})
        uuid = data.get("task_uuid")
        if event["event"] == "playbook_on_task_start":
            starts[uuid] = _instant(event["created"])
        elif event["event"] in RESULTS and uuid in starts:
            # A result the callback did not time (none seen so far) counts as instant.
            end = _instant(data.get("end") or event["created"])
            start = _instant(data["start"]) if data.get("start") else end
            hosts.setdefault(uuid, []).append((start, end))
            skipped += event["event"] == "runner_on_skipped"
    run_end = _instant(events[-1]["created"])
    order = sorted(starts, key=starts.get)
    slowest = within = between = 0.0
    for i, uuid in enumerate(order):
        if uuid not in hosts:  # no host ran it (a task of a play with no hosts matched)
            continue
        longest = max(end - start for start, end in hosts[uuid])
        last = max(end for _, end in hosts[uuid])
        slowest += longest
        within += max(0.0, last - starts[uuid] - longest)
        following = starts[order[i + 1]] if i + 1 < len(order) else run_end
        between += max(0.0, following - last)
    return Timeline(
        slowest=slowest,
        within=within,
        between=between,
        results=sum(len(ran) for ran in hosts.values()),
        result_seconds=sum(end - start for ran in hosts.values() for start, end in ran),
        skipped=skipped,
    )
