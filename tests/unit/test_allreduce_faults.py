"""A dead, hung or absent rank ends the run with an error naming it, never a hang."""

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

from validation.guard import EXIT_DIST_FAILURE, EXIT_INJECTED_FAULT
from validation.launch import HostSpec, LocalLauncher
from validation.ports import free_port
from validation.rendezvous import RendezvousError, exchange_hostnames

pytestmark = pytest.mark.unit

HOSTS = [HostSpec("node1"), HostSpec("node2"), HostSpec("node3")]
QUIET = {"PYTHONWARNINGS": "ignore"}
TIMEOUT_S = 4
# Startup (importing torch on a loaded 2-core machine) + timeout + grace periods.
WALL_S = 45


def _launch(extra: list[str], workdir: Path, after_failure_s: float | None = None):
    args = ["-b", "1K", "-e", "4K", "-w", "1", "-n", "3", "--timeout", str(TIMEOUT_S), *extra]
    launcher = LocalLauncher(
        wall_timeout_s=WALL_S, after_failure_s=after_failure_s, workdir=workdir
    )
    return launcher.launch("validation.allreduce", args, HOSTS, QUIET)


def test_crashed_rank_is_named_by_every_survivor(tmp_path: Path) -> None:
    launched = _launch(["--fault-exit-rank", "2"], tmp_path)
    dead = launched.ranks[2]
    assert dead.returncode == EXIT_INJECTED_FAULT
    for survivor in launched.ranks[:2]:
        # Finished on its own, well before the launcher's limit: no hang.
        assert survivor.finished, launched.summary()
        assert survivor.returncode == EXIT_DIST_FAILURE
        error = survivor.last_error_line()
        # Exactly the dead rank is named, not the live peer, and the speaker says who it is.
        me = f"rank {survivor.rank} (host node{survivor.rank + 1}) of 3"
        assert f"no answer from rank 2 (host node3) [this is {me}]" in error, error
    assert launched.result is None  # no half-measured result is published


def test_hung_rank_is_named_after_the_timeout_and_then_killed(tmp_path: Path) -> None:
    launched = _launch(["--fault-hang-rank", "2"], tmp_path, after_failure_s=3)
    for survivor in launched.ranks[:2]:
        assert survivor.finished, launched.summary()
        assert survivor.returncode == EXIT_DIST_FAILURE
        assert "no answer from rank 2 (host node3) [this is" in survivor.last_error_line()
    # The hung rank never exits by itself; the launcher kills it and says why.
    assert launched.unfinished_ranks == [2]
    assert "after rank" in (launched.ranks[2].killed or "")


def test_death_of_the_store_host_is_reported_as_rank_0(tmp_path: Path) -> None:
    launched = _launch(["--fault-exit-rank", "0"], tmp_path)
    for survivor in launched.ranks[1:]:
        assert survivor.finished, launched.summary()
        assert survivor.returncode == EXIT_DIST_FAILURE
        error = survivor.last_error_line()
        assert "served by rank 0 (host node1)" in error and "does not answer" in error, error


def test_rendezvous_timeout_names_the_rank_that_never_joined() -> None:
    port = free_port()
    master = dist.TCPStore(
        "127.0.0.1", port, 3, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False
    )
    client = dist.TCPStore("127.0.0.1", port, 3, is_master=False, timeout=timedelta(seconds=5))
    errors: dict[int, str] = {}

    def join(rank: int, store: dist.Store, host: str) -> None:
        try:
            exchange_hostnames(store, rank, 3, host, timeout_s=1.0)
        except RendezvousError as exc:
            errors[rank] = str(exc)

    threads = [
        threading.Thread(target=join, args=(0, master, "node1")),
        threading.Thread(target=join, args=(1, client, "node2")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert set(errors) == {0, 1}
    for rank, message in errors.items():
        assert "rank 2 never joined" in message, message
        assert f"this is rank {rank}" in message


def test_rendezvous_returns_every_ranks_host_in_rank_order() -> None:
    port = free_port()
    master = dist.TCPStore(
        "127.0.0.1", port, 2, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False
    )
    client = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=timedelta(seconds=5))
    got: dict[int, list[str]] = {}
    threads = [
        threading.Thread(
            target=lambda r=r, s=s, h=h: got.__setitem__(r, exchange_hostnames(s, r, 2, h, 5.0))
        )
        for r, s, h in ((0, master, "gpu001"), (1, client, "gpu002"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert got == {0: ["gpu001", "gpu002"], 1: ["gpu001", "gpu002"]}
