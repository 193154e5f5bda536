"""Isolation names the bad node or link behind a slow allreduce, and nobody healthy."""

from __future__ import annotations

import math

import pytest

from kiln.certification.isolation import isolate
from kiln.certification.simulate import SimulatedFabric, make_fabric, score
from kiln.certification.verdict import Isolation

pytestmark = pytest.mark.unit

BASE = 100.0
THRESHOLD = 0.75 * BASE
SCENARIOS = {"one bad node": (1, 0), "two bad nodes": (2, 0), "one bad link": (0, 1)}


def hosts(n: int) -> list[str]:
    return [f"h{i:04d}" for i in range(n)]


def run_on(fabric: SimulatedFabric, **kwargs) -> Isolation:
    return isolate(fabric.hosts, fabric.run_round, THRESHOLD, **kwargs)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("n", [4, 8, 16, 64, 1024])
def test_the_culprits_are_named_exactly_and_nobody_healthy_is_blamed(n, scenario):
    nodes, links = SCENARIOS[scenario]
    trials = 30 if n >= 1024 else 200
    exact, wrong = 0, []
    for seed in range(trials):
        fabric, truth = make_fabric(n, bad_nodes=nodes, bad_links=links, seed=seed)
        iso = run_on(fabric)
        result = score(iso, truth)
        exact += result["exact"]
        if result["healthy_blamed"] or result["false_links"]:
            wrong.append((seed, result))
        assert iso.conclusive, (seed, iso.note)
    assert exact >= 0.99 * trials, f"{exact}/{trials} exact"
    assert not wrong, f"healthy hosts or links blamed: {wrong[:3]}"


@pytest.mark.parametrize("n", [8, 64, 1024])
def test_one_bad_node_costs_at_most_two_runs_per_halving_plus_one(n):
    limit = 2 * math.log2(n) + 1
    # Every position at small N; a spread of them at 1024.
    for bad in range(0, n, 1 if n <= 64 else 37):
        fabric = SimulatedFabric(hosts(n), bad_nodes={hosts(n)[bad]: 0.5}, seed=bad)
        iso = run_on(fabric)
        assert [c.hosts for c in iso.culprits] == [(hosts(n)[bad],)]
        assert len(iso.runs) <= limit, (bad, len(iso.runs))


@pytest.mark.parametrize("n", [5, 7, 12, 100])
def test_non_power_of_two_sizes_stay_within_the_rounded_up_bound(n):
    limit = 2 * math.ceil(math.log2(n)) + 1
    for bad in range(n):
        fabric = SimulatedFabric(hosts(n), bad_nodes={hosts(n)[bad]: 0.5}, seed=bad)
        iso = run_on(fabric)
        assert [c.hosts for c in iso.culprits] == [(hosts(n)[bad],)]
        assert len(iso.runs) <= limit, (bad, len(iso.runs))


def test_two_hosts_and_a_referee_name_the_slow_one():
    fabric = SimulatedFabric(["a", "b", "ctl"], bad_nodes={"b": 0.5})
    iso = isolate(["a", "b"], fabric.run_round, THRESHOLD, referees=["ctl"])
    assert [(c.kind, c.hosts, c.fault_code) for c in iso.culprits] == [
        ("node", ("b",), "KILN-ISO-001")
    ]
    assert iso.conclusive
    assert all("ctl" in r.hosts and len(r.hosts) == 2 for r in iso.runs)


def test_two_hosts_with_a_bad_link_are_run_again_before_the_link_is_blamed():
    fabric = SimulatedFabric(["a", "b", "ctl"], bad_links={frozenset(("a", "b")): 0.5})
    iso = isolate(["a", "b"], fabric.run_round, THRESHOLD, referees=["ctl"])
    assert [(c.kind, c.hosts, c.fault_code) for c in iso.culprits] == [
        ("link", ("a", "b"), "KILN-ISO-002")
    ]
    again = [r for r in iso.runs if r.purpose == "reproduce"]
    assert [(r.hosts, r.slow) for r in again] == [(("a", "b"), True)]
    assert again[0].id in iso.culprits[0].evidence


def test_a_two_host_slowdown_that_does_not_come_back_blames_nobody():
    # The cluster-wide run of a and b was slow (that is why isolation runs), but the
    # fabric is healthy now: a transient, e.g. a busy host, not a bad link.
    fabric = SimulatedFabric(["a", "b", "ctl"])
    iso = isolate(["a", "b"], fabric.run_round, THRESHOLD, referees=["ctl"])
    assert iso.culprits == [] and not iso.conclusive
    assert "KILN-ISO-004" in iso.note and "ran fast when run again" in iso.note
    assert [r.purpose for r in iso.runs].count("reproduce") == 1


def test_two_hosts_without_a_referee_are_suspects_not_bad_nodes():
    fabric = SimulatedFabric(["a", "b"], bad_nodes={"b": 0.5})
    iso = isolate(["a", "b"], fabric.run_round, THRESHOLD)
    assert [(c.kind, set(c.hosts), c.fault_code) for c in iso.culprits] == [
        ("suspects", {"a", "b"}, "KILN-ISO-003")
    ]
    assert not [c for c in iso.culprits if c.kind == "node"]


def test_a_healthy_fabric_is_inconclusive_and_blames_nobody():
    fabric = SimulatedFabric(hosts(16), seed=3)
    iso = run_on(fabric, trigger="allreduce.busbw cluster")
    assert not iso.conclusive
    assert iso.culprits == []
    assert "KILN-ISO-004" in iso.note
    assert iso.trigger == "allreduce.busbw cluster"


def test_a_failed_run_counts_as_slow_and_names_the_dead_node():
    dead = "h0005"

    def run_round(groups):
        return [None if dead in g else 100.0 for g in groups]

    iso = isolate(hosts(16), run_round, THRESHOLD)
    assert [(c.kind, c.hosts) for c in iso.culprits] == [("node", (dead,))]
    failed = [r for r in iso.runs if dead in r.hosts]
    assert failed and all(r.slow and r.busbw_gbps is None and r.error for r in failed)


def test_a_dead_node_in_the_simulated_fabric_fails_its_runs():
    fabric = SimulatedFabric(hosts(64), bad_nodes={"h0040": 0.0})
    iso = run_on(fabric)
    assert [(c.kind, c.hosts) for c in iso.culprits] == [("node", ("h0040",))]


def test_a_bad_link_inside_a_triple_is_found_by_its_edge_runs():
    # 6 hosts split 3 + 3: the link is inside the slow triple, whose members are all fine.
    fabric = SimulatedFabric(hosts(6), bad_links={frozenset(("h0000", "h0001")): 0.5})
    iso = run_on(fabric)
    assert [(c.kind, c.hosts, c.fault_code) for c in iso.culprits] == [
        ("link", ("h0000", "h0001"), "KILN-ISO-002")
    ]
    assert any(r.purpose == "edge" for r in iso.runs)


def test_three_hosts_without_a_referee_still_find_the_bad_node():
    # No fast run to borrow a partner from: pairs of suspects are tried first.
    fabric = SimulatedFabric(["a", "b", "c"], bad_nodes={"c": 0.5}, seed=1)
    iso = isolate(["a", "b", "c"], fabric.run_round, THRESHOLD)
    assert [(c.kind, c.hosts) for c in iso.culprits] == [("node", ("c",))]


def test_serial_mode_runs_one_group_per_call():
    fabric, truth = make_fabric(64, bad_nodes=2, seed=7)
    iso = run_on(fabric, parallel=False)
    assert score(iso, truth)["exact"]
    assert fabric.history and all(len(groups) == 1 for groups in fabric.history)
    assert iso.rounds == len(iso.runs) == fabric.runs


@pytest.mark.parametrize("n", [8, 64, 1024])
def test_parallel_mode_packs_disjoint_runs_into_fewer_rounds(n):
    fabric, truth = make_fabric(n, bad_nodes=1, seed=11)
    iso = run_on(fabric)
    assert score(iso, truth)["exact"]
    for groups in fabric.history:
        flat = [h for g in groups for h in g]
        assert len(flat) == len(set(flat))
    assert iso.rounds == len(fabric.history) < len(iso.runs)
    assert len({r.id for r in iso.runs}) == len(iso.runs)
    for run in iso.runs:
        assert run.id.startswith(f"iso-{run.round}-")


def test_the_same_seed_gives_the_same_isolation():
    first = run_on(make_fabric(64, bad_nodes=1, bad_links=1, seed=5)[0]).to_dict()
    second = run_on(make_fabric(64, bad_nodes=1, bad_links=1, seed=5)[0]).to_dict()
    assert first == second
    assert Isolation.from_dict(first).to_dict() == first


def test_max_runs_stops_the_search_and_says_so():
    fabric = SimulatedFabric(hosts(64), bad_nodes={"h0005": 0.5})
    iso = run_on(fabric, max_runs=3)
    assert len(iso.runs) <= 3
    assert not iso.conclusive
    assert "max_runs=3" in iso.note
    assert not [c for c in iso.culprits if c.hosts != ("h0005",)]


def test_a_partner_across_an_untested_bad_link_does_not_frame_the_member():
    # h6 is bad; the link h7-h0 is bad too, but no run so far had h7 and h0 side by side.
    # Confirming h7 with h0 would make the healthy h7 look like a bad node.
    names = hosts(8)
    fabric = SimulatedFabric(
        names, bad_nodes={names[6]: 0.5}, bad_links={frozenset((names[7], names[0])): 0.5}
    )
    iso = run_on(fabric, parallel=False)
    assert [(c.kind, c.hosts) for c in iso.culprits if c.kind == "node"] == [("node", (names[6],))]
