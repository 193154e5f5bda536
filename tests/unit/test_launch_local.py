"""Real multi-process gloo allreduce runs through LocalLauncher on loopback."""

from pathlib import Path

import pytest

from validation.allreduce import sweep_sizes
from validation.launch import HostSpec, LocalLauncher
from validation.launch.base import assign_ranks, with_json_arg
from validation.results import AllreduceResult

pytestmark = pytest.mark.unit

# Small sizes and few iterations: the runs prove correctness and plumbing on a
# 2-core machine, not performance.
ARGS = ["-b", "1K", "-e", "1M", "--dtype", "float32,bfloat16", "-w", "1", "-n", "3"]
ARGS += ["--repeat", "2", "--timeout", "20"]
QUIET = {"PYTHONWARNINGS": "ignore"}


def _run(hosts: list[HostSpec], workdir: Path) -> AllreduceResult:
    launcher = LocalLauncher(wall_timeout_s=60, workdir=workdir)
    launched = launcher.launch("validation.allreduce", ARGS, hosts, QUIET)
    assert launched.ok, launched.summary()
    assert launched.result is not None, "rank 0 wrote no JSON"
    stdout = launched.ranks[0].stdout_text()
    assert "Avg bus bandwidth" in stdout and "Out of bounds values : 0 OK" in stdout
    # Only rank 0 prints the table.
    assert all("Avg bus bandwidth" not in r.stdout_text() for r in launched.ranks[1:])
    return AllreduceResult.from_dict(launched.result)


def _assert_correct_and_positive(result: AllreduceResult) -> None:
    for dtype, elem in (("float32", 4), ("bfloat16", 2)):
        rows = [r for r in result.metrics.sizes if r.dtype == dtype]
        assert [r.size_bytes for r in rows] == sweep_sizes(1024, 1024**2, 2, elem)
        for row in rows:
            assert row.wrong == 0, f"{dtype} {row.size_bytes} B: {row.wrong} wrong elements"
            assert row.busbw_gbps > 0
            assert row.time_us_min <= row.time_us_median <= row.time_us_max
            assert len(row.repeat_time_us) == 2
    assert result.metrics.avg_busbw_gbps > 0


def test_two_ranks_reduce_correctly_in_float32_and_bfloat16(tmp_path: Path) -> None:
    result = _run([HostSpec("node1"), HostSpec("node2")], tmp_path)
    _assert_correct_and_positive(result)
    assert result.environ.world_size == 2
    assert result.environ.hostnames == ["node1", "node2"]
    assert result.environ.backend == "gloo"
    assert result.metrics.bus_factor == 1.0
    # busbw = algbw * 2(n-1)/n, which is 1 for two ranks.
    assert all(r.busbw_gbps == pytest.approx(r.algbw_gbps) for r in result.metrics.sizes)


def test_three_ranks_on_two_hosts_reduce_correctly(tmp_path: Path) -> None:
    result = _run([HostSpec("node1", slots=2), HostSpec("node2")], tmp_path)
    _assert_correct_and_positive(result)
    assert result.environ.hostnames == ["node1", "node1", "node2"]
    row = result.metrics.sizes[-1]
    assert row.busbw_gbps == pytest.approx(row.algbw_gbps * 4 / 3)


def test_ranks_are_numbered_host_by_host() -> None:
    slots = assign_ranks([HostSpec("a", slots=2), HostSpec("b", slots=1)])
    assert [(s.rank, s.local_rank, s.host.name) for s in slots] == [
        (0, 0, "a"),
        (1, 1, "a"),
        (2, 0, "b"),
    ]
    with pytest.raises(ValueError, match="unique"):
        assign_ranks([HostSpec("a"), HostSpec("a")])


def test_an_explicit_json_path_is_respected() -> None:
    assert with_json_arg(["-b", "8", "--json", "/x/r.json"], "/tmp/d.json")[1] == "/x/r.json"
    assert with_json_arg(["--json=/x/r.json"], "/tmp/d.json")[1] == "/x/r.json"
    args, path = with_json_arg(["-b", "8"], "/tmp/d.json")
    assert args == ["-b", "8", "--json", "/tmp/d.json"] and path == "/tmp/d.json"
