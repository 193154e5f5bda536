"""What a run does before it touches the disk: the workloads, who reads whose files,
and how much space that takes. Standard library only.

Who reads whose files is the heart of the cache avoidance. Lab nodes cannot
drop their caches, so a rank must read data its own host never held: files
written by a rank on another host. Ranks are grouped by host in order of first
appearance; the ranks of host ``h`` take, local rank by local rank, the ranks
of host ``h+1``, then ``h+2`` and so on around the ring. Two ranks on one host
never read the same set: the second would be served from the page cache the
first one filled. Only when a host has more ranks than all other hosts together
do its extra ranks read files written on their own host (by another of its
ranks, whose writes were fsynced and dropped from the cache); with a single
host that is all there is, and the result says a single host cannot rule out
its own cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Workload names in the order they run.
WORKLOADS = ("large", "small")


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload as every rank runs it: ``count`` files of ``file_size`` bytes each."""

    name: str
    file_size: int
    count: int

    @property
    def bytes_per_rank(self) -> int:
        """Bytes one rank writes (and one rank reads) for this workload."""
        return self.file_size * self.count


def hosts_in_order(hostnames: Sequence[str]) -> list[str]:
    """Distinct host names in order of their first rank."""
    return list(dict.fromkeys(hostnames))


def reading_sources(hostnames: Sequence[str]) -> list[int]:
    """For every rank, the rank whose files it reads (see the module docstring).

    ``hostnames`` is indexed by rank. With one rank in all, it reads its own files.
    """
    hosts = hosts_in_order(hostnames)
    ranks_on = {h: [r for r, name in enumerate(hostnames) if name == h] for h in hosts}
    if len(hosts) == 1:
        ranks = ranks_on[hosts[0]]
        return [ranks[(i + 1) % len(ranks)] for i in range(len(ranks))]
    local_index = {r: i for h in hosts for i, r in enumerate(ranks_on[h])}
    candidates: dict[str, list[int]] = {}
    for k, host in enumerate(hosts):
        others = [
            r for step in range(1, len(hosts)) for r in ranks_on[hosts[(k + step) % len(hosts)]]
        ]
        # More ranks here than elsewhere: local rank i >= len(others) reads local
        # rank i - len(others), a neighbour on this host, never itself.
        candidates[host] = others + ranks_on[host]
    return [candidates[h][local_index[r]] for r, h in enumerate(hostnames)]


def space_needed(specs: Sequence[WorkloadSpec], world_size: int, block: int) -> tuple[int, int]:
    """(bytes, inodes) the whole run puts on the shared filesystem.

    Each file is rounded up to the filesystem's ``block`` (``statvfs`` ``f_frsize``);
    inodes count the files plus the run, rank and workload directories.
    """
    block = max(1, block)
    per_rank = sum(s.count * -(-s.file_size // block) * block for s in specs)
    files = sum(s.count for s in specs) + 1 + len(specs)
    return world_size * per_rank, world_size * files + 1
