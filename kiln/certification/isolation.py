"""Find the node or link behind a slow cluster-wide allreduce.

The cluster-wide run is a ring: a bad NODE slows every group it is in, a bad
LINK (a, b) slows a group only when a and b are ring neighbours in it. So the
search is group testing:

* Bisection. A slow group of k >= 4 hosts is split into its two contiguous
  halves (ring order kept) and both run at once; every slow half is searched
  further, every host of a fast run is known good. One bad node among N hosts
  costs 2 runs per level down to a pair plus 2 confirmations: 2*log2(N)
  runs, against N/2 + 2 for a tool that pairs every host up front.
* Boundary edges. Splitting drops two ring edges of the parent: the one between
  the halves and the wrap-around. When neither half is slow, the fault is a
  link on one of them, so exactly those two pairs are run.
* Confirmation with a known-good partner. A slow pair only says "a, b, or the
  link between them". Google's cluster-health-scanner blames both nodes of a
  slow pair; here each member is run again with a distinct host already seen
  in a fast run (or a referee such as the controller): slow with a good
  partner is a bad node, both fine elsewhere is a bad link between them. With
  no good host to lean on, the pair is reported as suspects, not as bad nodes.
  When that pair is the whole cluster, its one slow run is all the evidence
  there is: it is run again, and its link is blamed only if it is slow again.
  Partners that are ring neighbours of the member in the input order are
  avoided when possible: those edges were never exercised on their own.

When every member still lacks a partner (every run so far was slow), pairs of
suspects never run together are tried ("cross" runs) to find good hosts first.
Runs of different branches share a round when their hosts are disjoint. Pure
Python and deterministic: the same answers from `run_round` give the same runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from kiln.certification.verdict import Culprit, GroupRun, Isolation

RunRound = Callable[[list[tuple[str, ...]]], list[float | None]]
"""Run disjoint groups at the same time; each one's busbw in GB/s, None when it failed."""

NODE_CODE = "KILN-ISO-001"
LINK_CODE = "KILN-ISO-002"
SUSPECTS_CODE = "KILN-ISO-003"
NOT_REPRODUCED_CODE = "KILN-ISO-004"


@dataclass(eq=False)
class _Request:
    """One run a branch waits for. A confirm gets its partner when it is scheduled."""

    purpose: str
    hosts: tuple[str, ...] = ()
    member: str | None = None
    group: tuple[str, ...] = ()
    """Confirm: the slow group under test; its members are never partners."""
    owner: _Branch | None = None
    run: GroupRun | None = None
    verdict: str | None = None
    """Confirm: ``good``, ``bad`` or ``unknown`` (no partner could be found)."""

    @property
    def done(self) -> bool:
        return self.verdict is not None if self.member else self.run is not None


_Steps = Generator[list[_Request], None, None]


@dataclass(eq=False)
class _Branch:
    steps: _Steps
    waiting: list[_Request]


def _fmt(bw: float | None) -> str:
    return "failed" if bw is None else f"{bw:.3g} GB/s"


def _ring_edges(hosts: tuple[str, ...]) -> list[frozenset[str]]:
    if len(hosts) < 2:
        return []
    pairs = list(zip(hosts, hosts[1:], strict=False))
    if len(hosts) >= 3:
        pairs.append((hosts[-1], hosts[0]))
    return [frozenset(p) for p in pairs]


class _Isolator:
    """One isolation: what is known so far, the branches still searching, their runs."""

    def __init__(
        self,
        hosts: tuple[str, ...],
        run_round: RunRound,
        threshold: float,
        referees: Sequence[str],
        parallel: bool,
        max_runs: int,
    ) -> None:
        self.hosts = tuple(hosts)
        self.index = {h: i for i, h in enumerate(self.hosts)}
        self.referees = tuple(referees)
        self.run_round, self.threshold, self.parallel = run_round, threshold, parallel
        self.max_runs = max_runs
        self.runs: list[GroupRun] = []
        self.rounds = 0
        self.good: dict[str, str] = {}  # compute host -> id of its first fast run
        self.fast_edges: set[frozenset[str]] = set()
        # The cluster-wide run of two hosts is that pair already: no "cross" rerun of it.
        self.tried: set[frozenset[str]] = {frozenset(self.hosts)} if len(hosts) == 2 else set()
        self.pending: list[_Request] = []
        self.culprits: list[Culprit] = []
        self.unexplained: list[str] = []
        self.cut_off = False

    # -- knowledge ---------------------------------------------------------------------------

    def _is_good(self, host: str) -> bool:
        return host in self.good or host in self.referees

    def _slow_with_good(self, member: str) -> list[GroupRun]:
        """Slow pair runs of `member` with a partner known good (now)."""
        return [
            r
            for r in self.runs
            if len(r.hosts) == 2 and member in r.hosts and r.slow
            if self._is_good(next(h for h in r.hosts if h != member))
        ]

    def _decide(self, req: _Request) -> str | None:
        member = req.member
        if member in self.good:
            return "good"
        partners = {h for r in self._slow_with_good(member) for h in r.hosts if h != member}
        # A good partner from outside the group settles it; group-mates need two, since one
        # slow pair with a group-mate is also explained by the link between them.
        if partners - set(req.group) or len(partners) >= 2:
            return "bad"
        return None

    def _adjacent(self, a: str, b: str) -> bool:
        if a not in self.index or b not in self.index:
            return False
        gap = abs(self.index[a] - self.index[b])
        return gap == 1 or (len(self.hosts) >= 3 and gap == len(self.hosts) - 1)

    def _partner(self, req: _Request, used: set[str], busy: set[str]) -> str | None:
        """A known-good host outside the group, free this round; else a free referee."""
        member = req.member
        candidates = [h for h in self.good if h not in used and h not in req.group]
        if candidates:
            # Keep hosts other branches still need free, and skip untested ring neighbours.
            return min(
                candidates, key=lambda h: (h in busy, self._adjacent(h, member), self.index[h])
            )
        return next((r for r in self.referees if r not in used), None)

    # -- branches ----------------------------------------------------------------------------

    def spawn(self, steps: _Steps) -> None:
        self._advance(_Branch(steps, []))

    def _advance(self, branch: _Branch) -> None:
        for reqs in branch.steps:
            if reqs:
                branch.waiting = reqs
                for req in reqs:
                    req.owner = branch
                self.pending.extend(reqs)
                return

    def _finish(self, req: _Request) -> None:
        if req in self.pending:
            self.pending.remove(req)
        branch = req.owner
        if branch is not None and all(r.done for r in branch.waiting):
            self._advance(branch)

    def search(self, group: tuple[str, ...], via: GroupRun | None) -> _Steps:
        """A slow group: bisect it, or confirm its members when it is small."""
        if len(group) <= 3:
            yield from self._small(group, via)
            return
        m = (len(group) + 1) // 2
        halves = [self._fixed(group[:m], "half"), self._fixed(group[m:], "half")]
        yield halves
        slow = [r.run for r in halves if r.run.slow]
        for run in slow:
            self.spawn(self.search(run.hosts, run))
        if slow:
            return
        # Both halves are fast: only the two ring edges they do not use remain.
        edges = [(group[m - 1], group[m]), (group[-1], group[0])]
        boundary = [self._fixed(e, "boundary") for e in edges]
        yield boundary
        slow = [r.run for r in boundary if r.run.slow]
        for run in slow:
            self.spawn(self._small(run.hosts, run))
        if not slow:
            self._unexplained(group, via, "its halves and boundary edges are all fast")

    def _small(self, group: tuple[str, ...], via: GroupRun | None) -> _Steps:
        confirms = [_Request("confirm", member=h, group=group) for h in group]
        yield confirms
        bad = [r for r in confirms if r.verdict == "bad"]
        for req in bad:
            self._node(req.member, via)
        if bad:
            return
        unknown = [r.member for r in confirms if r.verdict == "unknown"]
        if unknown:
            self._suspects(group, unknown, via)
            return
        if len(group) == 2:
            if via is not None:
                self._link(group, via)
                return
            # The pair is the whole cluster and its one slow run the only evidence: run it
            # again before blaming the link, so a transient slowdown blames nobody.
            again = self._fixed(group, "reproduce")
            yield [again]
            if again.run.slow:
                self._link(group, again.run)
            else:
                self._unexplained(group, via, "ran fast when run again as a pair")
            return
        # Every member is fine with outside partners: one of the group's own ring edges is bad.
        edges = [
            self._fixed(tuple(sorted(e, key=self.index.get)), "edge")
            for e in _ring_edges(group)
            if e not in self.fast_edges
        ]
        yield edges
        slow = [r.run for r in edges if r.run.slow]
        for run in slow:
            self._link(run.hosts, run)
        if not slow:
            self._unexplained(group, via, "its members and ring edges are all fine")

    def _fixed(self, hosts: tuple[str, ...], purpose: str) -> _Request:
        return _Request(purpose, hosts=tuple(hosts))

    # -- findings ----------------------------------------------------------------------------

    def _node(self, host: str, via: GroupRun | None) -> None:
        slow = self._slow_with_good(host)
        partners = ", ".join(next(h for h in r.hosts if h != host) for r in slow)
        bws = ", ".join(_fmt(r.busbw_gbps) for r in slow)
        reason = f"{host} is slow ({bws}) paired with known-good {partners}"
        evidence = tuple(dict.fromkeys([*((via.id,) if via else ()), *(r.id for r in slow)]))
        self._add(Culprit("node", (host,), NODE_CODE, reason, evidence))

    def _link(self, hosts: tuple[str, ...], run: GroupRun | None) -> None:
        a, b = sorted(hosts, key=self.index.__getitem__)
        seen = f"slow as a pair ({_fmt(run.busbw_gbps)})" if run else "the slow cluster-wide pair"
        reason = f"{a} and {b} are {seen} but each is fast with other partners"
        good_runs = dict.fromkeys(self.good[h] for h in (a, b) if h in self.good)
        evidence = ((run.id,) if run else ()) + tuple(good_runs)
        self._add(Culprit("link", (a, b), LINK_CODE, reason, evidence))

    def _suspects(self, group: tuple[str, ...], unknown: list[str], via: GroupRun | None) -> None:
        reason = (
            f"{'+'.join(group)} is slow, but no known-good partner was available to test "
            f"{' or '.join(unknown)} alone: a node or a link among them (add a referee host)"
        )
        self._add(Culprit("suspects", group, SUSPECTS_CODE, reason, (via.id,) if via else ()))

    def _unexplained(self, group: tuple[str, ...], via: GroupRun | None, why: str) -> None:
        where = via.id if via else "the cluster-wide run"
        self.unexplained.append(f"{where} ({len(group)} hosts) was slow but {why}")

    def _add(self, culprit: Culprit) -> None:
        if all((c.kind, c.hosts) != (culprit.kind, culprit.hosts) for c in self.culprits):
            self.culprits.append(culprit)

    # -- scheduling --------------------------------------------------------------------------

    def _settle(self) -> None:
        """Close every confirm that what is known already decides (no run needed)."""
        changed = True
        while changed:
            changed = False
            for req in [r for r in self.pending if r.member]:
                if req in self.pending and (verdict := self._decide(req)):
                    req.verdict = verdict
                    self._finish(req)
                    changed = True

    def _pack(self, room: int) -> list[_Request]:
        """The next round: pending runs in order whose hosts are disjoint (one if serial)."""
        used: set[str] = set()
        busy = {h for r in self.pending if not r.member for h in r.hosts}
        batch: list[_Request] = []
        for req in self.pending:
            if len(batch) >= room or (batch and not self.parallel):
                break
            if req.member:
                if req.member in used:
                    continue
                partner = self._partner(req, used, busy)
                if partner is None:
                    continue
                key = {h: self.index.get(h, len(self.hosts)) for h in (req.member, partner)}
                req.hosts = tuple(sorted(key, key=key.get))
            elif used & set(req.hosts):
                continue
            batch.append(req)
            used.update(req.hosts)
        return batch

    def _cross(self, room: int) -> list[_Request]:
        """No member has a partner: pair suspects never run together, to find good hosts."""
        groups = {r.member: r.group for r in self.pending if r.member}
        pairs = []
        for x, group in groups.items():
            for y in [*groups, *(h for h in group if h in self.good)]:
                pair = frozenset((x, y))
                if x == y or pair in self.tried or (y in groups and self.index[y] < self.index[x]):
                    continue
                # Two suspects of different groups first, away from each other in the ring.
                key = (
                    y in self.good,
                    y in group,
                    self._adjacent(x, y),
                    self.index[x],
                    self.index[y],
                )
                pairs.append((key, (x, y)))
        used: set[str] = set()
        batch: list[_Request] = []
        for _, pair in sorted(pairs):
            if len(batch) >= room or (batch and not self.parallel):
                break
            if not used & set(pair):
                batch.append(self._fixed(pair, "cross"))
                used.update(pair)
        return batch

    def _execute(self, batch: list[_Request]) -> None:
        groups = [r.hosts for r in batch]
        answers = list(self.run_round(groups))
        if len(answers) != len(groups):
            raise ValueError(f"run_round returned {len(answers)} results for {len(groups)} groups")
        self.rounds += 1
        for k, (req, bw) in enumerate(zip(batch, answers, strict=True), start=1):
            failed = bw is None or not math.isfinite(bw)
            run = GroupRun(
                id=f"iso-{self.rounds}-{k}",
                hosts=req.hosts,
                round=self.rounds,
                busbw_gbps=None if failed else float(bw),
                slow=failed or bw < self.threshold,
                purpose=req.purpose,
                error="run failed" if failed else None,
            )
            self.runs.append(run)
            req.run = run
            if len(run.hosts) == 2:
                self.tried.add(frozenset(run.hosts))
            if not run.slow:
                for h in run.hosts:
                    if h in self.index:
                        self.good.setdefault(h, run.id)
                self.fast_edges.update(_ring_edges(run.hosts))
        for req in batch:
            if req.member:
                # Fast: the member is good. Slow: its partner was good, so the member is bad.
                req.verdict = self._decide(req) or "unknown"
            self._finish(req)

    def isolate(self) -> None:
        self.spawn(self.search(self.hosts, None))
        while True:
            self._settle()
            if not self.pending:
                return
            room = self.max_runs - len(self.runs)
            if room <= 0:
                self.cut_off = True
                return
            batch = self._pack(room) or self._cross(room)
            if batch:
                self._execute(batch)
                continue
            # Nothing can run and no pair is left to try: these members cannot be told apart.
            for req in [r for r in self.pending if r.member]:
                if req in self.pending:
                    req.verdict = "unknown"
                    self._finish(req)


def isolate(
    hosts: Sequence[str],
    run_round: RunRound,
    threshold_gbps: float,
    referees: Sequence[str] = (),
    parallel: bool = True,
    trigger: str = "",
    max_runs: int | None = None,
) -> Isolation:
    """Find the bad node(s) or link(s) behind a slow cluster-wide run over `hosts`.

    `hosts` are in the rank (ring) order of that run. `run_round` runs disjoint groups at
    once and returns each one's busbw (None when it failed, which counts as slow); a run below
    `threshold_gbps` is slow. `referees` are extra hosts assumed good, used as partners when
    no compute is known good yet; they are never suspects. `parallel=False` runs one group per
    call. Beyond `max_runs` runs (default 4*N+16) the search stops, inconclusive.
    """
    hosts = tuple(hosts)
    if len(set(hosts)) != len(hosts):
        raise ValueError("isolate: hosts must be distinct")
    if set(referees) & set(hosts):
        raise ValueError("isolate: a referee cannot also be a host under test")
    limit = 4 * len(hosts) + 16 if max_runs is None else max_runs
    iso = _Isolator(hosts, run_round, threshold_gbps, referees, parallel, limit)
    if hosts:
        iso.isolate()
    runs = f"{len(iso.runs)} runs in {iso.rounds} rounds"
    notes = []
    if iso.culprits:
        found = "; ".join(f"{c.kind} {'+'.join(c.hosts)} ({c.fault_code})" for c in iso.culprits)
        notes.append(f"found {found} after {runs}")
    elif not iso.cut_off:
        notes.append(
            f"{NOT_REPRODUCED_CODE}: no node or link of the {len(hosts)} hosts reproduced the "
            f"slow cluster-wide run ({runs}); nobody is blamed (transient, or needs the whole ring)"
        )
    if iso.cut_off:
        notes.append(f"stopped at max_runs={limit} ({runs}) with the search unfinished")
    notes += iso.unexplained
    return Isolation(
        trigger=trigger,
        threshold_gbps=threshold_gbps,
        runs=list(iso.runs),
        culprits=list(iso.culprits),
        rounds=iso.rounds,
        conclusive=bool(iso.culprits) and not iso.cut_off,
        note="; ".join(notes),
    )
