"""Bounded collectives: a dead or stuck peer becomes an error that names it.

Design (no heartbeats, and nothing relies on a dying peer saying goodbye):

1. Every collective runs with the group timeout (``work.wait(timeout=...)``;
   gloo also enforces it on each send/recv). A crashed peer usually shows up
   at once as "connection closed"; a hung one as a timeout.
2. A rank whose collective fails writes a *failure report* to the rendezvous
   store, raises an ``abort`` flag, and then waits a short grace period for
   the other ranks' reports. The ranks that are alive report too; the ranks
   that never report within the grace period are the ones named as "no
   answer". A dead or hung rank is found by its silence, not by its message.
3. Ranks that are not next to the fault in the ring stay blocked in their
   collective until their own timeout. A watchdog thread polls the abort flag
   (only while a collective has been in flight for over a second) so they
   join the report within about a second instead.
4. Last resort: if a collective is still in flight ``timeout + grace`` after it
   started (a backend that ignores its timeout), the watchdog writes the same
   one-line error and ends the process. A thread stuck in C++ cannot be
   interrupted from Python, so ending the process is the only bounded option.

Rank 0 usually serves the store. It lingers after its own decision until the
ranks that reported have read the result (bounded by the grace period), so
their messages can still name the missing ranks.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from validation.rendezvous import DistSession, default_grace_s, format_ranks

#: Exit codes shared by the validation modules.
EXIT_OK = 0
EXIT_WRONG_RESULTS = 1
EXIT_USAGE = 2
EXIT_DIST_FAILURE = 3
EXIT_INJECTED_FAULT = 13

_POLL_S = 0.2


class CollectiveError(RuntimeError):
    """A collective failed or timed out; ``str(err)`` is the one-line report."""

    def __init__(self, message: str, missing_ranks: list[int] | None = None) -> None:
        super().__init__(message)
        self.missing_ranks = missing_ranks
        """Ranks that did not answer; None when it could not be determined."""


def short_reason(exc: BaseException) -> str:
    """First sentence of a backend error without the C++ source location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", text)
    text = re.split(r"(?<=[.!])\s", text, maxsplit=1)[0].rstrip(".!")
    return text[:160]


def is_timeout(exc: BaseException) -> bool:
    """Whether a backend error means "took too long" rather than "peer went away"."""
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


class CollectiveGuard:
    """Runs collectives with a bound and turns failures into named-rank errors.

    Use as a context manager around a benchmark; wrap each collective (or, on
    CUDA, each loop of enqueued collectives) in :meth:`collective`.
    """

    def __init__(
        self,
        session: DistSession,
        grace_s: float | None = None,
        poll_s: float = 1.0,
        prog: str = "kiln validation",
    ) -> None:
        self.session = session
        self.timeout_s = session.timeout_s
        self.grace_s = grace_s if grace_s is not None else default_grace_s(self.timeout_s)
        self.poll_s = poll_s
        self.prog = prog
        self._flight: tuple[str, float] | None = None
        self._fail_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def timeout(self) -> timedelta:
        """The per-collective timeout as a timedelta, for ``work.wait``."""
        return timedelta(seconds=self.timeout_s)

    def __enter__(self) -> CollectiveGuard:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="kiln-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the watchdog thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.poll_s + 1)
            self._thread = None

    @contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Mark a region that waits on collectives; a backend error in it becomes
        a :class:`CollectiveError` naming the ranks that did not answer.

        ``what`` describes the operation for the message, e.g.
        ``"allreduce of 1048576 B float32"``.
        """
        start = time.monotonic()
        self._flight = (what, start)
        try:
            yield
        except CollectiveError:
            raise  # already reported by a nested region
        except RuntimeError as exc:
            # RuntimeError covers DistBackendError and "Operation timed out!".
            self._flight = None
            elapsed = time.monotonic() - start
            verb = (
                f"timed out after {elapsed:.0f} s"
                if is_timeout(exc)
                else f"failed after {elapsed:.1f} s ({short_reason(exc)})"
            )
            with self._fail_lock:  # if the watchdog got here first it ends the process
                missing, note = self._compare_notes(what, verb)
            raise CollectiveError(self._compose(what, verb, missing, note), missing) from exc
        finally:
            self._flight = None

    def all_reduce(
        self, tensor: torch.Tensor, what: str, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
    ) -> None:
        """In-place ``all_reduce`` that blocks at most the timeout."""
        with self.collective(what):
            work = dist.all_reduce(tensor, op=op, async_op=True)
            work.wait(timeout=self.timeout)

    def barrier(self, what: str = "barrier") -> None:
        """Synchronise all ranks with a one-element all_reduce (works on every backend)."""
        self.all_reduce(torch.zeros(1, device=self.session.device), what)

    # -- failure reporting -------------------------------------------------

    def _compose(self, what: str, verb: str, missing: list[int] | None, note: str) -> str:
        s = self.session
        me = s.describe_self()
        if missing:
            hosts = {r: s.hostnames[r] for r in missing if r < len(s.hostnames)}
            return f"{what} {verb}: no answer from {format_ranks(missing, hosts)} [this is {me}]"
        if missing == []:
            return (
                f"{what} {verb}: every rank reported this failure, so no rank is missing "
                f"(suspect the network or the backend) [this is {me}]"
            )
        return f"{what} {verb}; {note}; group is ranks 0-{s.world_size - 1}, this is {me}"

    def _store_down_note(self) -> str:
        s = self.session
        if s.store is None:
            return "no rendezvous store to compare notes with the other ranks"
        if s.store_hosted_by_rank0 and s.rank != 0:
            return (
                f"the rendezvous store at {s.store_address}, served by {s.describe(0)}, "
                "does not answer, so rank 0 is down, hung or has already exited"
            )
        return f"the rendezvous store at {s.store_address} does not answer"

    def _compare_notes(self, what: str, verb: str) -> tuple[list[int] | None, str]:
        """Report this failure, wait for the others' reports, return the silent ranks.

        Bounded: a hard timer ends the process if the store itself hangs.
        """
        s = self.session
        store = s.store
        if store is None:
            return None, self._store_down_note()
        hard = threading.Timer(
            3 * self.grace_s + 10, self._hard_exit, args=(what, verb, self._store_down_note())
        )
        hard.daemon = True
        hard.start()
        try:
            store.set_timeout(timedelta(seconds=self.grace_s))
            store.set(f"fail/{s.rank}", json.dumps({"what": what, "verb": verb}))
            store.set("abort", str(s.rank))
            reported = store.add("failed", 1)
            deadline = time.monotonic() + self.grace_s
            while reported < s.world_size and time.monotonic() < deadline:
                time.sleep(_POLL_S)
                reported = store.add("failed", 0)
            # One key check per rank, once: cheap enough even for large groups.
            missing = [r for r in range(s.world_size) if not store.check([f"fail/{r}"])]
            store.add("acked", 1)
            if s.rank == 0 and s.store_hosted_by_rank0:
                # Our process serves the store: stay until the ranks that reported
                # have read the outcome, or they could not name anyone.
                linger = time.monotonic() + self.grace_s
                while store.add("acked", 0) < store.add("failed", 0):
                    if time.monotonic() > linger:
                        break
                    time.sleep(_POLL_S)
            return missing, ""
        except RuntimeError:
            return None, self._store_down_note()
        finally:
            hard.cancel()

    def _hard_exit(self, what: str, verb: str, note: str) -> None:
        s = self.session
        line = (
            f"{what} {verb}; could not compare notes with the other ranks in time ({note}); "
            f"group is ranks 0-{s.world_size - 1}, this is {s.describe_self()}"
        )
        self._die(line)

    def _die(self, line: str) -> None:
        print(f"{self.prog}: error: {line}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_DIST_FAILURE)

    def _watch(self) -> None:
        s = self.session
        while not self._stop.wait(self.poll_s):
            flight = self._flight
            if flight is None:
                continue
            what, start = flight
            elapsed = time.monotonic() - start
            if elapsed > self.timeout_s + self.grace_s:
                verb = (
                    f"timed out after {elapsed:.0f} s (the {s.backend} backend did not "
                    f"enforce its {self.timeout_s:g} s timeout)"
                )
                self._fail_from_watchdog(what, verb)
            elif elapsed >= self.poll_s and s.store is not None:
                try:
                    aborted = s.store.check(["abort"])
                    first = int(s.store.get("abort")) if aborted else -1
                except (RuntimeError, ValueError):
                    # Store unreachable: the backend timeout or the budget above decides.
                    continue
                if aborted:
                    verb = f"aborted after {elapsed:.0f} s because {s.describe(first)} failed"
                    self._fail_from_watchdog(what, verb)

    def _fail_from_watchdog(self, what: str, verb: str) -> None:
        # The main thread is blocked in C++; it cannot be interrupted, so the
        # watchdog reports and ends the process itself.
        if not self._fail_lock.acquire(blocking=False):
            return  # the main thread is already reporting
        if self._flight is None:  # the collective finished meanwhile
            self._fail_lock.release()
            return
        try:
            missing, note = self._compare_notes(what, verb)
        except Exception as exc:  # the process must end whatever happens here
            missing, note = None, f"could not compare notes with the other ranks ({exc})"
        self._die(self._compose(what, verb, missing, note))
