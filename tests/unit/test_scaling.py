"""Scaling-ladder maths: efficiency, serial fraction, ceiling and the break rung."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from tests.conftest import REPO
from validation.scaling import (
    STRONG,
    WEAK,
    Ladder,
    Rung,
    amdahl_speedup,
    efficiencies,
    find_break,
    fit_ladder,
    gustafson_speedup,
)

pytestmark = pytest.mark.unit

NS = (1, 2, 4, 8, 16, 32, 64)
T1 = 250.0  # samples/s on one node


def _ladder(law, s: float, mode: str, noise: float = 0.0, seed: int = 0, ns=NS) -> Ladder:
    rng = random.Random(seed)
    points = {n: T1 * law(s, n) * (1 + rng.uniform(-noise, noise)) for n in ns}
    return Ladder.from_points(points, mode)


@pytest.mark.parametrize("s", [0.0, 0.01, 0.05, 0.2, 0.5])
def test_exact_amdahl_ladder_recovers_s_and_t1(s: float) -> None:
    fit = fit_ladder(_ladder(amdahl_speedup, s, STRONG))
    assert fit.law == "amdahl"
    assert fit.serial_fraction == pytest.approx(s, abs=1e-9)
    assert fit.t1 == pytest.approx(T1, rel=1e-9)
    assert fit.rms_relative_residual == pytest.approx(0.0, abs=1e-9)
    if s > 0:
        assert fit.r_squared == pytest.approx(1.0)
        assert fit.ceiling == pytest.approx(1 / s)


@pytest.mark.parametrize("s", [0.0, 0.01, 0.05, 0.2, 0.5])
def test_exact_gustafson_ladder_recovers_s(s: float) -> None:
    fit = fit_ladder(_ladder(gustafson_speedup, s, WEAK))
    assert fit.law == "gustafson"
    assert fit.serial_fraction == pytest.approx(s, abs=1e-9)
    assert fit.t1 == pytest.approx(T1, rel=1e-9)
    assert fit.ceiling is None  # weak scaling has no ceiling
    for rung in fit.rungs:
        assert rung.efficiency == pytest.approx(gustafson_speedup(s, rung.n) / rung.n)
        assert rung.fitted_throughput == pytest.approx(rung.throughput)


@pytest.mark.parametrize("seed", range(5))
def test_noisy_strong_ladder_recovers_s_within_a_looser_tolerance(seed: int) -> None:
    fit = fit_ladder(_ladder(amdahl_speedup, 0.05, STRONG, noise=0.03, seed=seed))
    assert fit.serial_fraction == pytest.approx(0.05, abs=0.01)
    assert 15 < fit.ceiling < 25


@pytest.mark.parametrize("seed", range(5))
def test_noisy_weak_ladder_recovers_s_within_a_looser_tolerance(seed: int) -> None:
    # In weak scaling s is about 1 - E(N): ±3 % noise on T is about ±0.03 on s at one
    # rung, and the fit over seven rungs narrows that to roughly ±0.02 (1 sigma).
    fit = fit_ladder(_ladder(gustafson_speedup, 0.2, WEAK, noise=0.03, seed=seed))
    assert fit.serial_fraction == pytest.approx(0.2, abs=0.05)
    assert fit.r_squared > 0.99


def test_95_percent_parallel_job_has_a_ceiling_of_20() -> None:
    fit = fit_ladder(_ladder(amdahl_speedup, 0.05, STRONG))
    assert fit.ceiling == pytest.approx(20.0)
    # And the law predicts speedups beyond the ladder, below the ceiling.
    assert fit.predicted_speedup(1024) == pytest.approx(amdahl_speedup(0.05, 1024))
    assert fit.predicted_speedup(10**9) < 20.0
    assert fit.predicted_efficiency(64) == pytest.approx(amdahl_speedup(0.05, 64) / 64)


@pytest.mark.parametrize("mode", [WEAK, STRONG])
def test_super_linear_ladder_clamps_s_at_zero_and_says_so(mode: str) -> None:
    fit = fit_ladder(Ladder.from_points({1: 100, 2: 210, 4: 430, 8: 870}, mode))
    assert fit.serial_fraction == 0.0
    assert fit.clamped
    assert any("super-linear" in n and "E(4) = 1.075" in n for n in fit.notes)
    assert any("clamped at 0" in n for n in fit.notes)
    assert fit.break_n is None
    if mode == STRONG:
        assert fit.ceiling is None and any("unbounded" in n for n in fit.notes)


def test_throughput_falling_with_n_clamps_s_at_one() -> None:
    fit = fit_ladder(Ladder.from_points({1: 100, 2: 90, 4: 80}, STRONG))
    assert fit.serial_fraction == 1.0 and fit.clamped
    assert fit.ceiling == pytest.approx(1.0)
    assert any("clamped at 1" in n for n in fit.notes)


@pytest.mark.parametrize("mode", [WEAK, STRONG])
def test_perfect_scaling_has_efficiency_one_everywhere_and_no_break(mode: str) -> None:
    fit = fit_ladder(Ladder.from_points({n: 123.0 * n for n in NS}, mode))
    assert all(e == 1.0 for e in fit.efficiencies.values())
    assert fit.serial_fraction == pytest.approx(0.0, abs=1e-12)
    assert fit.break_n is None and fit.break_reason is None
    assert not any("super-linear" in n for n in fit.notes)


def test_a_ladder_that_breaks_at_8_names_8() -> None:
    points = {1: 100.0, 2: 198.0, 4: 390.0, 8: 640.0, 16: 1200.0}
    fit = fit_ladder(Ladder.from_points(points), threshold=0.9)
    assert fit.efficiencies[4] == pytest.approx(0.975)
    assert fit.efficiencies[8] == pytest.approx(0.8)
    assert fit.break_n == 8
    assert "N=8" in fit.break_reason and "0.800" in fit.break_reason


def test_a_drop_from_the_previous_rung_breaks_even_above_the_threshold() -> None:
    points = {1: 100.0, 2: 200.0, 4: 400.0, 8: 720.0}  # E(8) = 0.9: not below 0.5
    fit = fit_ladder(Ladder.from_points(points), threshold=0.5, max_drop=0.05)
    assert fit.break_n == 8
    assert "fell by 0.100 from N=4" in fit.break_reason
    assert fit_ladder(Ladder.from_points(points), threshold=0.5).break_n is None
    assert fit_ladder(Ladder.from_points(points), threshold=None, max_drop=0.2).break_n is None


def test_missing_rungs_are_skipped_and_reported() -> None:
    points = {1: 100.0, 2: 200.0, 4: None, 8: float("nan"), 16: 1600.0}
    ladder = Ladder.from_points(points)
    assert [r.n for r in ladder.rungs] == [1, 2, 16]
    assert ladder.skipped == (4, 8)
    fit = fit_ladder(ladder, max_drop=0.05)
    assert fit.skipped == (4, 8)
    assert any("N=4, 8" in n for n in fit.notes)
    assert fit.serial_fraction == pytest.approx(0.0, abs=1e-12)
    assert set(fit.efficiencies) == {1, 2, 16}


def test_a_ladder_without_n1_uses_its_smallest_rung_as_reference_and_says_so() -> None:
    s = 0.05
    ladder = Ladder.from_points({n: T1 * amdahl_speedup(s, n) for n in (4, 8, 16, 32)}, STRONG)
    fit = fit_ladder(ladder)
    assert fit.reference_n == 4
    assert fit.efficiencies[4] == 1.0
    assert fit.efficiencies[8] == pytest.approx(amdahl_speedup(s, 8) / amdahl_speedup(s, 4) * 4 / 8)
    assert any("no N=1 rung" in n and "relative to N=4" in n for n in fit.notes)
    # The fit does not need T(1): it extrapolates it.
    assert fit.serial_fraction == pytest.approx(s, abs=1e-9)
    assert fit.t1 == pytest.approx(T1, rel=1e-9)


@pytest.mark.parametrize(("points", "count"), [({}, 0), ({1: 100.0}, 1), ({1: 100.0, 2: None}, 1)])
def test_fewer_than_two_rungs_give_no_fit_and_say_why(points: dict, count: int) -> None:
    fit = fit_ladder(Ladder.from_points(points))
    assert fit.serial_fraction is None and fit.t1 is None and fit.ceiling is None
    assert fit.reason == f"fitting the serial fraction needs at least 2 measured rungs, got {count}"
    assert fit.predicted_speedup(8) is None
    assert len(fit.rungs) == count


def test_two_rungs_fit_exactly_and_r_squared_is_not_claimed() -> None:
    fit = fit_ladder(Ladder.from_points({1: 100.0, 2: 190.0}, WEAK))
    assert fit.serial_fraction == pytest.approx(0.1)
    assert fit.r_squared is None


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(1, 100.0), (1, 120.0)], "N=1 appears more than once"),
        ({0: 100.0}, "N must be a positive integer"),
        ({2.5: 100.0}, "N must be a positive integer"),
        ({True: 100.0}, "N must be a positive integer"),
        ({1: 0.0}, "must be positive and finite"),
        ({1: -5.0}, "must be positive and finite"),
        ({1: math.inf}, "must be positive and finite"),
        ({1: "fast"}, "must be a number"),
    ],
)
def test_malformed_ladders_are_rejected(points, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ladder.from_points(points)


def test_ladder_invariants_and_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="mode must be one of weak, strong"):
        Ladder.from_points({1: 1.0}, mode="medium")
    with pytest.raises(ValueError, match="increasing order"):
        Ladder((Rung(2, 1.0), Rung(1, 1.0)))
    with pytest.raises(ValueError, match="both measured and skipped"):
        Ladder((Rung(1, 1.0),), skipped=(1,))
    ladder = Ladder.from_points({1: 1.0, 2: 2.0})
    with pytest.raises(ValueError, match="threshold must be positive"):
        fit_ladder(ladder, threshold=0)
    with pytest.raises(ValueError, match="max_drop must be positive"):
        find_break(efficiencies(ladder), max_drop=-0.1)


def test_fit_is_json_ready() -> None:
    fit = fit_ladder(_ladder(amdahl_speedup, 0.05, STRONG))
    doc = json.loads(json.dumps(fit.to_dict()))
    assert doc["serial_fraction"] == pytest.approx(0.05)
    assert doc["rungs"][0]["n"] == 1


def test_scaling_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, validation.scaling\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert run.stdout.strip() == "[]", run.stdout
