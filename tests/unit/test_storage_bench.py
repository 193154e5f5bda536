"""``python -m validation.storage``: files, reading plan, slow hosts, result documents,
and real runs through LocalLauncher on a temporary directory."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from validation.launch import HostSpec, LocalLauncher
from validation.results import Environ, ResultSchemaError
from validation.storage import StorageResult, flag_slow_hosts, measurements, reading_sources
from validation.storage.files import (
    RUN_PREFIX,
    ShortFileError,
    check_target,
    drop_cache,
    rank_dir,
    read_files,
    remove_tree,
    run_dir,
    workload_paths,
    write_files,
)
from validation.storage.plan import WorkloadSpec
from validation.storage.result import RankIo, StorageMetrics, summarize_workload

pytestmark = pytest.mark.unit

QUIET = {"PYTHONWARNINGS": "ignore"}
SMALL_RUN = ["--large-size", "1M", "--large-count", "2", "--small-size", "4K"]
SMALL_RUN += ["--small-count", "20", "--block-size", "256K", "--timeout", "20"]


# -- files -------------------------------------------------------------------------


def test_written_files_have_their_size_and_read_back_byte_for_byte_counted(tmp_path: Path) -> None:
    spec = WorkloadSpec("large", 300_000, 3)
    paths = workload_paths(rank_dir(run_dir(tmp_path, "r1"), "node/1", 4), spec)
    assert paths[0].parent == tmp_path / f"{RUN_PREFIX}r1" / "node_1-4" / "large"
    wrote = write_files(paths, spec.file_size, 64 * 1024)
    assert (wrote.files, wrote.bytes) == (3, 900_000) and wrote.seconds > 0
    assert all(p.stat().st_size == 300_000 for p in paths)
    # Random data with a counter per block: nothing for compression or dedup to fold.
    data = paths[0].read_bytes()
    assert data[:65536] != data[65536:131072]
    read = read_files(paths, spec.file_size, 64 * 1024)
    assert (read.files, read.bytes) == (3, 900_000) and read.seconds > 0
    with pytest.raises(FileExistsError):  # always fresh files, never overwritten ones
        write_files(paths[:1], spec.file_size, 64 * 1024)


def test_fadvise_dontneed_is_available_on_linux(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    with open(path, "rb") as handle:
        assert drop_cache(handle.fileno()) is (sys.platform.startswith("linux"))


def test_a_short_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ShortFileError, match=r"short\.bin: read 100 bytes, 4096 were written"):
        read_files([path], 4096, 1024)


def test_cleanup_leaves_nothing(tmp_path: Path) -> None:
    run = run_dir(tmp_path, "r2")
    for rank in range(2):
        for spec in (WorkloadSpec("large", 5000, 2), WorkloadSpec("small", 10, 30)):
            write_files(workload_paths(rank_dir(run, "h", rank), spec), spec.file_size, 4096)
    assert remove_tree(run) == []
    assert list(tmp_path.iterdir()) == []
    assert remove_tree(run) == []  # already gone: nothing to report


def test_dir_checks_name_the_directory_and_what_to_fix(tmp_path: Path) -> None:
    specs = [WorkloadSpec("large", 1024, 1)]
    assert check_target(tmp_path, specs, 2) is None
    missing = check_target(tmp_path / "nope", specs, 2)
    assert missing and f"{tmp_path / 'nope'} does not exist" in missing
    (tmp_path / "file").write_text("")
    not_dir = check_target(tmp_path / "file", specs, 2)
    assert not_dir and "is not a directory" in not_dir
    full = check_target(tmp_path, [WorkloadSpec("large", 2**50, 4)], 8)
    assert full and str(tmp_path) in full and "free" in full and "--large-size" in full


# -- reading plan ---------------------------------------------------------------------


def test_every_rank_reads_a_rank_on_the_next_host() -> None:
    assert reading_sources(["a", "b"]) == [1, 0]
    assert reading_sources(["a", "b", "c"]) == [1, 2, 0]
    # Local rank i reads local rank i of the next host: no two ranks of one host
    # read the same files, or the second would read the first one's cache.
    assert reading_sources(["a", "a", "b", "b"]) == [2, 3, 0, 1]


@pytest.mark.parametrize(
    "hostnames",
    [["a", "a", "b"], ["a", "a", "a", "b", "c"], ["x", "y", "x", "y", "z"], ["a"] * 3],
)
def test_reading_plan_never_reads_itself_or_shares_a_set_on_one_host(hostnames) -> None:
    sources = reading_sources(hostnames)
    for host in set(hostnames):
        mine = [s for r, s in enumerate(sources) if hostnames[r] == host]
        assert len(mine) == len(set(mine)), f"{host} reads a set twice: {sources}"
    assert all(s != r for r, s in enumerate(sources))
    if len(set(hostnames)) > 1:  # another host's files first, wherever there are enough
        assert hostnames[sources[0]] != hostnames[0]


def test_a_single_rank_reads_its_own_files() -> None:
    assert reading_sources(["solo"]) == [0]


# -- slow hosts and aggregates -----------------------------------------------------------


def test_the_slow_host_and_only_it_is_flagged() -> None:
    median, slow = flag_slow_hosts({"n1": 10.0, "n2": 10.5, "n3": 3.1, "n4": 9.8}, 0.7)
    assert median == pytest.approx(9.9)
    assert [s.host for s in slow] == ["n3"]
    assert slow[0].read_gbps == 3.1 and slow[0].median_gbps == pytest.approx(9.9)
    assert slow[0].ratio == pytest.approx(3.1 / 9.9)
    assert flag_slow_hosts({"n1": 10.0, "n2": 7.5, "n3": 9.0}, 0.7)[1] == ()
    assert flag_slow_hosts({"alone": 0.1}, 0.7)[1] == ()  # nothing to compare with


def _rank(rank: int, host: str, src: int, src_host: str, read_s: float) -> RankIo:
    return RankIo(rank, host, src, src_host, 2, 2_000_000, 1.0, 2, 2_000_000, read_s)


def test_a_host_is_as_fast_as_its_slowest_rank() -> None:
    ranks = [_rank(0, "a", 2, "b", 0.5), _rank(1, "a", 3, "b", 1.0), _rank(2, "b", 0, "a", 0.1)]
    ranks.append(_rank(3, "b", 1, "a", 0.1))
    w = summarize_workload("large", 1_000_000, 2, ranks, 0.7)
    a, b = w.host("a"), w.host("b")
    assert a is not None and b is not None
    assert a.read_gbps == pytest.approx(4e6 / 1.0 / 1e9)  # 4 MB over the slower rank's 1 s
    assert b.read_gbps == pytest.approx(4e6 / 0.1 / 1e9)
    assert w.read_gbps_total == pytest.approx(8e6 / 1.0 / 1e9)
    assert [s.host for s in w.slow_hosts] == ["a"]


# -- result document -----------------------------------------------------------------------


def _result() -> StorageResult:
    ranks = [_rank(0, "a", 1, "b", 0.5), _rank(1, "b", 0, "a", 0.25)]
    workloads = (
        summarize_workload("large", 1_000_000, 2, ranks, 0.7),
        summarize_workload("small", 4096, 20, ranks, 0.7),
    )
    environ = Environ(["a", "b"], 2, "gloo", "2.13.0", "3.11.7")
    metrics = StorageMetrics(workloads, True, (), {"directory": "/shared"})
    return StorageResult(environ=environ, metrics=metrics)


def test_result_round_trips_and_yields_per_host_measurements() -> None:
    result = _result()
    assert StorageResult.from_json(result.to_json()) == result
    assert StorageResult.from_dict(result.to_dict()) == result
    doc = json.loads(result.to_json())
    assert list(doc) == ["name", "schema_version", "environ", "metrics"]
    assert (doc["name"], doc["schema_version"]) == ("storage", 1)
    found = {(m.name, m.subject): m for m in measurements(result)}
    assert found[("storage.read_gbps.large", "a")].value == pytest.approx(4e-3)
    assert found[("storage.read_gbps.large", "b")].unit == "GB/s"
    assert found[("storage.files_per_s.small", "b")].value == pytest.approx(8.0)
    assert ("storage.files_per_s.large", "a") not in found
    assert found[("storage.read_gbps_total.small", None)].value == pytest.approx(8e-3)
    assert ("storage.write_gbps_total.large", None) in found
    assert found[("storage.cross_host_reads", None)].value is True


def _broken(edit) -> dict:
    doc = copy.deepcopy(_result().to_dict())
    edit(doc)
    return doc


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.update(name="allreduce"), "result.name"),
        (lambda d: d.update(schema_version=2), "result.schema_version"),
        (lambda d: d.pop("environ"), "result.environ"),
        (lambda d: d["metrics"].pop("workloads"), "metrics.workloads"),
        (lambda d: d["metrics"].pop("cross_host_reads"), "metrics.cross_host_reads"),
        (
            lambda d: d["metrics"]["workloads"][0]["hosts"][1].update(read_gbps="fast"),
            "metrics.workloads[0].hosts[1].read_gbps",
        ),
        (
            lambda d: d["metrics"]["workloads"][1]["ranks"][0].pop("source_host"),
            "metrics.workloads[1].ranks[0].source_host",
        ),
        (
            lambda d: d["metrics"]["workloads"][0]["hosts"][0].update(read_bytes=True),
            "metrics.workloads[0].hosts[0].read_bytes",
        ),
        (lambda d: d["metrics"]["workloads"].append(3), "metrics.workloads[2]"),
    ],
)
def test_reader_rejects_malformed_documents_naming_the_key(edit, key: str) -> None:
    with pytest.raises(ResultSchemaError, match=key.replace("[", r"\[").replace("]", r"\]")):
        StorageResult.from_dict(_broken(edit))


def test_reader_rejects_non_objects_and_non_json() -> None:
    with pytest.raises(ResultSchemaError, match="expected a JSON object"):
        StorageResult.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ResultSchemaError, match="not JSON"):
        StorageResult.from_json("{")


# -- command line and real runs ---------------------------------------------------------------


def test_importing_the_package_and_reading_results_does_not_import_torch() -> None:
    code = (
        "import sys, validation.storage, validation.storage.result, validation.storage.files\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert run.stdout.strip() == "[]", run.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workload", "large,huge"], "--workload: unknown huge"),
        (["--small-count", "0"], "--small-count"),
        (["--slow-fraction", "1.5"], "--slow-fraction"),
        (["--large-size", "lots"], "not a size"),
    ],
)
def test_bad_options_exit_2_before_joining_a_group(
    argv: list[str], message: str, tmp_path: Path, capsys
) -> None:
    from validation.storage import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_dir_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    run = subprocess.run(
        [sys.executable, "-m", "validation.storage", str(missing), *SMALL_RUN],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | QUIET,
    )
    assert run.returncode == 2, run.stderr
    assert f"python -m validation.storage: error: {missing} does not exist" in run.stderr


def test_two_hosts_read_each_others_files_and_leave_nothing_behind(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    launcher = LocalLauncher(wall_timeout_s=90, after_failure_s=30, workdir=tmp_path / "launch")
    launched = launcher.launch(
        "validation.storage", [str(shared), *SMALL_RUN], [HostSpec("a"), HostSpec("b")], QUIET
    )
    assert launched.ok, launched.summary()
    assert launched.result is not None, "rank 0 wrote no JSON"
    result = StorageResult.from_dict(launched.result)
    assert result.environ.hostnames == ["a", "b"]
    assert result.metrics.cross_host_reads and result.metrics.notes == ()
    for w in result.metrics.workloads:
        assert {h.host for h in w.hosts} == {"a", "b"}
        assert all(h.read_gbps > 0 for h in w.hosts), w.hosts
        on_a = next(r for r in w.ranks if r.host == "a")
        assert (on_a.source_rank, on_a.source_host) == (1, "b")
        assert on_a.read_bytes == w.file_size_bytes * w.files_per_rank
    small = result.metrics.workload("small")
    assert small is not None and small.files_per_rank == 20
    assert all(h.files_per_s > 0 for h in small.hosts)
    per_host = {(m.name, m.subject) for m in measurements(result)}
    assert {("storage.read_gbps.large", "a"), ("storage.read_gbps.small", "b")} <= per_host
    assert list(shared.iterdir()) == [], "the run directory was not removed"
    assert "small total: read" in launched.ranks[0].stdout_text()
