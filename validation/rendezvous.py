"""Join a torch.distributed group from env:// variables, with names for every rank.

Why not plain ``init_process_group("env://")``: when a rank never shows up it
times out with "2/3 clients joined", which does not say *which* rank or host is
missing. Here every rank first publishes its host name in the rendezvous
store; on timeout we can list the ranks that never wrote theirs. The host
names are kept in the :class:`DistSession` so later errors can name hosts too.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from validation.envvars import HOST_NAME_ENV


class RendezvousError(RuntimeError):
    """The group could not be formed; the message names the missing ranks."""


@dataclass
class DistSession:
    """An initialised process group plus what error messages need to know about it."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    hostnames: list[str]
    """Host name of every rank, indexed by rank."""
    timeout_s: float
    device: torch.device
    store: dist.Store | None
    """Store for fault reports, namespaced to this session; None if unavailable."""
    store_address: str = ""
    """``host:port`` of the rendezvous store, for "store unreachable" messages."""
    store_hosted_by_rank0: bool = True
    """False under torchrun, where the agent (not rank 0's process) hosts the store."""

    def describe(self, rank: int) -> str:
        """``rank 2 (host node3)`` — the form every error message uses."""
        host = self.hostnames[rank] if 0 <= rank < len(self.hostnames) else ""
        return f"rank {rank} (host {host or 'unknown'})"

    def describe_self(self) -> str:
        """Which member of the group this process is, e.g. ``rank 0 (host a) of 3``."""
        return f"{self.describe(self.rank)} of {self.world_size}"


def local_host_name() -> str:
    """Name this rank reports for itself: ``$KILN_HOST_NAME`` or the OS host name."""
    return os.environ.get(HOST_NAME_ENV) or socket.gethostname()


def default_grace_s(timeout_s: float) -> float:
    """How long a failing rank waits for the others' failure reports.

    Long enough for live ranks to notice and report (a second or two), short
    enough that a dead peer costs seconds, not minutes.
    """
    return min(10.0, max(3.0, timeout_s))


def resolve_backend(backend: str) -> str:
    """``auto`` means nccl when CUDA is usable, else gloo; other names pass through."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise RendezvousError(
            f"environment variable {name} is not set; launch with torchrun or a kiln "
            "launcher, which set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
        )
    try:
        return int(value)
    except ValueError:
        raise RendezvousError(f"environment variable {name}={value!r} is not an integer") from None


def format_ranks(ranks: list[int], hostnames: dict[int, str] | None = None) -> str:
    """``rank 2 (host node3)`` / ``ranks 1, 2``: host names where known, long lists cut."""
    shown = ranks[:8]
    parts = []
    for r in shown:
        host = (hostnames or {}).get(r)
        parts.append(f"{r} (host {host})" if host else str(r))
    text = ", ".join(parts)
    if len(ranks) > len(shown):
        text += f" and {len(ranks) - len(shown)} more"
    return ("rank " if len(ranks) == 1 else "ranks ") + text


def exchange_hostnames(
    store: dist.Store, rank: int, world_size: int, host: str, timeout_s: float
) -> list[str]:
    """Publish this rank's host name and wait for everyone else's.

    Raises :class:`RendezvousError` naming the ranks that did not publish
    within ``timeout_s``.
    """
    store.set(f"host/{rank}", json.dumps({"host": host}))
    keys = [f"host/{r}" for r in range(world_size)]
    try:
        store.wait(keys, timedelta(seconds=timeout_s))
    except RuntimeError as exc:  # DistError is a RuntimeError
        try:
            joined = {r for r in range(world_size) if store.check([f"host/{r}"])}
        except RuntimeError:
            raise RendezvousError(
                f"rendezvous failed after {timeout_s:g} s and the store stopped answering "
                f"({exc}); this is rank {rank} (host {host}) of {world_size}"
            ) from exc
        missing = [r for r in range(world_size) if r not in joined]
        if not missing:  # the wait failed for another reason than absence
            raise RendezvousError(f"rendezvous failed: {exc}") from exc
        raise RendezvousError(
            f"rendezvous timed out after {timeout_s:g} s: {format_ranks(missing)} never "
            f"joined ({len(joined)} of {world_size} did); this is rank {rank} (host {host})"
        ) from exc
    return [json.loads(raw)["host"] for raw in store.multi_get(keys)]


def init_from_env(backend: str = "auto", timeout_s: float = 300.0) -> DistSession:
    """Form the process group described by torchrun-style environment variables.

    Reads RANK, WORLD_SIZE, LOCAL_RANK (default 0), MASTER_ADDR, MASTER_PORT.
    The timeout bounds the store connection, the host-name exchange and
    ``init_process_group`` itself, and becomes the group's collective timeout.
    """
    rank = _env_int("RANK")
    world_size = _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = _env_int("MASTER_PORT")
    backend = resolve_backend(backend)
    host = local_host_name()
    timeout = timedelta(seconds=timeout_s)

    # Under torchrun the agent already serves a store on MASTER_PORT; rank 0
    # must connect to it instead of binding a second server on the same port.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        base = dist.TCPStore(
            addr,
            port,
            world_size,
            is_master=(rank == 0 and not agent_store),
            timeout=timeout,
            wait_for_workers=False,
        )
    except RuntimeError as exc:  # DistError is a RuntimeError
        who = "the torchrun agent" if agent_store else "rank 0"
        raise RendezvousError(
            f"could not reach the rendezvous store at {addr}:{port} (served by {who}) "
            f"within {timeout_s:g} s: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
            f"this is rank {rank} (host {host}) of {world_size}"
        ) from exc

    # A torchrun agent store outlives restarts; keep each attempt's keys apart.
    namespace = f"kiln/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    store = dist.PrefixStore(namespace, base)
    hostnames = exchange_hostnames(store, rank, world_size, host, timeout_s)

    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    pg_timeout = timeout
    if backend == "nccl":
        # NCCL's watchdog kills the process when a collective outlives the
        # group timeout, before our bounded waits can name the silent peer.
        # Our waits enforce timeout_s; the watchdog only backs them up.
        pg_timeout = timedelta(seconds=timeout_s + 3 * default_grace_s(timeout_s) + 30)
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("pg", store),
        rank=rank,
        world_size=world_size,
        timeout=pg_timeout,
    )
    return DistSession(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        backend=backend,
        hostnames=hostnames,
        timeout_s=timeout_s,
        device=device,
        store=dist.PrefixStore("guard", store),
        store_address=f"{addr}:{port}",
        store_hosted_by_rank0=not agent_store,
    )


def attach_to_initialized(timeout_s: float = 300.0) -> DistSession:
    """Describe a default process group that the caller already initialised.

    Host names are gathered with a bounded all_gather, and fault reports use
    the group's store under a fresh namespace so that a second run in the same
    job starts clean.
    """
    if not dist.is_initialized():
        raise RendezvousError("torch.distributed is not initialised; call init_from_env()")
    rank = dist.get_rank()
    world_size = dist.get_world_size()
    backend = dist.get_backend()
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    token = uuid.uuid4().hex if rank == 0 else ""
    pairs = [
        text.split("\t", 1)
        for text in _all_gather_strings(f"{local_host_name()}\t{token}", device, timeout_s)
    ]
    hostnames = [host for host, _ in pairs]
    session_id = pairs[0][1]
    store: dist.Store | None
    try:
        base = dist.distributed_c10d._get_default_store()
        store = dist.PrefixStore(f"kiln/{session_id}/guard", base)
    except (RuntimeError, AttributeError, ValueError):
        # Without a store, failures are still bounded; they just cannot name peers.
        store = None
    return DistSession(
        rank=rank,
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
        hostnames=hostnames,
        timeout_s=timeout_s,
        device=device,
        store=store,
        store_address=f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}",
        store_hosted_by_rank0=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True",
    )


def _all_gather_strings(text: str, device: torch.device, timeout_s: float) -> list[str]:
    """Every rank's ``text``, in rank order, bounded by ``timeout_s``.

    Not ``all_gather_object``: it needs numpy, which torch-only nodes may lack.
    """
    world_size = dist.get_world_size()
    timeout = timedelta(seconds=timeout_s)
    data = text.encode()
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(world_size)]
    dist.all_gather(lengths, length, async_op=True).wait(timeout=timeout)
    sizes = [int(t.item()) for t in lengths]
    buf = torch.zeros(max(1, *sizes), dtype=torch.uint8, device=device)
    buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8, device=device)
    bufs = [torch.empty_like(buf) for _ in range(world_size)]
    dist.all_gather(bufs, buf, async_op=True).wait(timeout=timeout)
    return [bytes(b[:n].cpu().tolist()).decode() for b, n in zip(bufs, sizes, strict=True)]
