"""The provisioning bench's verdict: a target is met only on measurements within it,
and a missed 3 vs 1 names the measured reason (work that cannot fit, or waiting)."""

from __future__ import annotations

import pytest

from bench.targets import Scaling, Target, scaling_reason

pytestmark = pytest.mark.unit


def test_a_target_is_met_only_when_every_run_is_measured_and_within_it() -> None:
    assert Target("warm / cold", 0.3, (0.21, 0.3)).met
    assert not Target("warm / cold", 0.3, (0.21, 0.31)).met
    missing = Target("no-op lab up", 15, (1.6, None), " s")
    assert not missing.met
    assert "NOT MET (1.60 s, missing)" in missing.line("it did not skip")
    assert not Target("no-op lab up", 15, (), " s").met


def test_a_met_target_gives_no_reason() -> None:
    line = Target("3 nodes / 1 node, warm", 1.5, (1.42,)).line("anything")
    assert line.endswith("met (1.42)")


def _pair(wall_three: float, need_three: float) -> Scaling:
    return Scaling(
        wall_one=60.0,
        wall_three=wall_three,
        need_three=need_three,
        busy_three=0.8,
        slowest_extra=wall_three - 60.0 - 3.0,
        serial_extra=3.0,
        task_time=1.9,
        task_cpu=1.1,
        nodes_extra=80.0,
        kernel_extra=40.0,
        cores=2,
    )


def test_work_that_cannot_fit_in_the_limit_is_named_as_the_reason() -> None:
    pair = _pair(wall_three=108.0, need_three=96.0)  # the work alone needs 1.6x
    reason = scaling_reason(pair, 1.5)
    assert reason.startswith("cannot be met on this machine with this work")
    assert "1.60x" in reason and "80 core-s more" in reason


def test_a_miss_is_split_into_shared_cores_and_what_more_hosts_cost_anywhere() -> None:
    pair = _pair(wall_three=108.0, need_three=84.0)  # fits in 1.4x, took 1.8x
    reason = scaling_reason(pair, 1.5)
    assert reason.startswith("task by task, the 3-node run took 48.0 s more")
    # 45 s of the 48 is the hosts' per-task stretch on shared cores, 3 s Ansible's
    # serial part; without the stretch the ratio would be (60 + 3) / 60.
    assert "45.0 s of it is each task's slowest host taking 1.90x as long" in reason
    assert "3.0 s is Ansible's serial part" in reason
    assert "about 1.05" in reason
