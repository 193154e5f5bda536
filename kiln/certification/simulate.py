"""A seeded simulated fabric: what `isolate` is tested and benchmarked against.

A run over a group is a ring allreduce in the given order: its busbw is the base
bandwidth times the worst node factor in the group times the worst factor of a
bad link whose two hosts are ring neighbours in that group, times per-run noise.
No torch, no hosts: thousands of isolations run in seconds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from kiln.certification.verdict import Isolation


@dataclass
class SimulatedFabric:
    """Hosts with some bad nodes and links; `run_round` is an `isolate` RunRound."""

    hosts: list[str]
    base_gbps: float = 100.0
    noise: float = 0.10
    """Each run's busbw is multiplied by uniform(1 - noise, 1 + noise), drawn per run."""
    bad_nodes: dict[str, float] = field(default_factory=dict)
    """Host -> busbw factor (0.5: half speed). A factor of 0 is a dead node: its runs fail."""
    bad_links: dict[frozenset[str], float] = field(default_factory=dict)
    """Pair -> factor; applies only when the two are ring neighbours in a run."""
    seed: int = 0
    runs: int = 0
    rounds: int = 0
    history: list[list[tuple[str, ...]]] = field(default_factory=list)
    """The groups of every `run_round` call, in order."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._known = set(self.hosts)

    def busbw(self, group: Sequence[str]) -> float | None:
        """One run over `group` in this ring order (draws noise); None when it fails."""
        node = min((self.bad_nodes.get(h, 1.0) for h in group), default=1.0)
        ring = list(zip(group, [*group[1:], group[0]], strict=True)) if len(group) > 1 else []
        if len(group) == 2:
            ring = ring[:1]  # a pair's ring is its one link
        link = min((self.bad_links.get(frozenset(e), 1.0) for e in ring), default=1.0)
        jitter = self._rng.uniform(1 - self.noise, 1 + self.noise)
        if node <= 0 or link <= 0:
            return None
        return self.base_gbps * node * link * jitter

    def run_round(self, groups: list[tuple[str, ...]]) -> list[float | None]:
        """Run disjoint groups of known hosts at once; each one's busbw or None."""
        seen: set[str] = set()
        for group in groups:
            if unknown := set(group) - self._known:
                raise AssertionError(f"unknown hosts {sorted(unknown)}")
            if seen & set(group) or len(set(group)) != len(group):
                raise AssertionError(f"groups of one round overlap: {groups}")
            seen.update(group)
        self.rounds += 1
        self.runs += len(groups)
        self.history.append([tuple(g) for g in groups])
        return [self.busbw(g) for g in groups]


@dataclass(frozen=True)
class Truth:
    """The faults a fabric was built with."""

    nodes: frozenset[str] = frozenset()
    links: frozenset[frozenset[str]] = frozenset()


def make_fabric(
    n: int,
    bad_nodes: int = 0,
    bad_links: int = 0,
    seed: int = 0,
    factor: float = 0.5,
    noise: float = 0.10,
    base_gbps: float = 100.0,
) -> tuple[SimulatedFabric, Truth]:
    """`n` hosts ``h0000``… with faults picked at random (seeded).

    Bad links join ring neighbours of the full order (a link no run uses cannot have
    slowed the cluster-wide run), never touch a bad node, and share no host (two bad
    links at one host look like a bad node from every partner but two).
    """
    rng = random.Random(seed)
    hosts = [f"h{i:04d}" for i in range(n)]
    nodes = rng.sample(hosts, bad_nodes)
    edges = [(hosts[i], hosts[(i + 1) % n]) for i in range(n if n > 2 else n - 1)]
    rng.shuffle(edges)
    links: list[frozenset[str]] = []
    taken = set(nodes)
    for a, b in edges:
        if len(links) == bad_links:
            break
        if a not in taken and b not in taken:
            links.append(frozenset((a, b)))
            taken.update((a, b))
    if len(links) < bad_links:
        raise ValueError(f"make_fabric: no room for {bad_links} bad links among {n} hosts")
    fabric = SimulatedFabric(
        hosts=hosts,
        base_gbps=base_gbps,
        noise=noise,
        bad_nodes=dict.fromkeys(nodes, factor),
        bad_links=dict.fromkeys(links, factor),
        seed=rng.randrange(2**32),
    )
    return fabric, Truth(frozenset(nodes), frozenset(links))


def score(isolation: Isolation, truth: Truth) -> dict[str, object]:
    """How an isolation's culprits compare with the truth.

    ``exact``: exactly the true bad nodes and links named, and no suspects;
    ``healthy_blamed``: hosts called bad nodes that are not; ``false_links``: links named
    that are not bad; ``missed``: true faults not named.
    """
    nodes = {h for c in isolation.culprits if c.kind == "node" for h in c.hosts}
    links = {frozenset(c.hosts) for c in isolation.culprits if c.kind == "link"}
    suspects = [c for c in isolation.culprits if c.kind == "suspects"]
    missed = sorted(truth.nodes - nodes) + sorted("+".join(sorted(x)) for x in truth.links - links)
    return {
        "exact": nodes == truth.nodes and links == truth.links and not suspects,
        "healthy_blamed": sorted(nodes - truth.nodes),
        "false_links": sorted("+".join(sorted(x)) for x in links - truth.links),
        "missed": missed,
    }
