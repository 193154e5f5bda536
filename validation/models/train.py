"""The timed DDP training loop on an initialised group: what is timed, and how.

Per workload and bucket size: a fresh model (a module holds one DDP's gradient
hooks) in DistributedDataParallel with that ``bucket_cap_mb``, ``warmup``
untimed steps (cuDNN autotuning, allocator growth, DDP's bucket rebuild after
step one), then ``steps`` timed steps.

A step is forward (bf16 autocast when ``amp``), backward (DDP's bucketed
allreduce overlaps it) and the optimizer step (SGD with momentum for ResNet,
AdamW for BERT, as their recipes). On CUDA each step ends with a device
synchronise (microseconds), so steps and loader waits are host-visible times.

Compute/communication split, the cheapest honest method: once per workload,
``steps`` extra steps run under ``no_sync()`` (no gradient allreduce) on an
input already on the device; that is the compute time. What the DDP step
takes beyond compute and loader wait is the communication that backward did
not hide (``comm_wait_s``). It needs no hooks or profiler and measures what
matters: the exposed cost, not the allreduce's duration while overlapped.

Timing: every rank times a phase with ``perf_counter`` from a barrier on;
the times are gathered through the guard (one allreduce of a vector with a
slot per rank) and the slowest rank defines the phase. Every step runs in
a guard region, so a peer that dies or hangs ends the run with the
named-rank error of :mod:`validation.guard`; DDP's own allreduce is bounded
by the process-group timeout set at join.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from validation.guard import EXIT_INJECTED_FAULT, CollectiveGuard
from validation.models.config import PROG, TrainConfig
from validation.models.data import (
    Batch,
    forever,
    make_loader,
    model_inputs,
    synthetic_batch,
    to_device,
)
from validation.models.presets import Workload, build_model
from validation.models.report import format_best, format_bucket, preamble
from validation.models.result import BucketRun, ModelRun, ModelsMetrics, ModelsResult
from validation.rendezvous import DistSession
from validation.results import collect_environ


class WorkloadError(Exception):
    """This rank cannot go on (out of memory, unreadable data); not a peer's fault.

    Deliberately not a RuntimeError, so the guard does not report it as a
    failed collective; the other ranks then see this rank leave and name it.
    """


class _Trainer:
    """A freshly built model in DDP with its optimizer, and the step that trains it."""

    def __init__(
        self, workload: Workload, session: DistSession, guard: CollectiveGuard, bucket_mb: float
    ) -> None:
        self.name = workload.name
        self.device = session.device
        self.channels_last = self.device.type == "cuda" and workload.family == "resnet"
        torch.manual_seed(0)
        with torch.device(self.device):
            model = build_model(workload)
        if self.channels_last:  # NHWC: what cuDNN's fastest convolutions want
            model = model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in model.parameters())
        with guard.collective(f"{self.name}: wrapping the model in DDP (broadcast from rank 0)"):
            self.ddp = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                bucket_cap_mb=bucket_mb,
            )
        params = model.parameters()
        if workload.family == "resnet":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        else:
            self.opt = torch.optim.AdamW(params, lr=1e-4)

    def step(self, batch: Batch, amp: bool) -> None:
        """One training step; returns when the device has finished it."""
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                loss = self.ddp(**model_inputs(batch, self.channels_last)).loss
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except torch.OutOfMemoryError as exc:
            rows = len(next(iter(batch.values())))
            raise WorkloadError(
                f"{self.name}: out of memory at {rows} samples per rank; lower --batch"
            ) from exc


class _Source:
    """Where a step's input comes from: the resident batch, or the loader."""

    def __init__(self, workload: Workload, config: TrainConfig, session: DistSession) -> None:
        self.device = session.device
        batch = config.batch or workload.batch
        self._it = None
        if config.data_dir:
            where = (session.rank, session.world_size, self.device)
            try:
                loader = make_loader(
                    config.data_dir, workload, batch, *where, config.workers, config.prefetch
                )
            except ValueError as exc:  # e.g. too few samples for this rank's batch
                raise WorkloadError(str(exc)) from None
            self._it = forever(loader)
            self.resident = self.next()
        else:
            self.resident = synthetic_batch(workload, batch, self.device, seed=session.rank)

    def next(self) -> Batch:
        """The next input, on the device."""
        if self._it is None:
            return self.resident
        try:
            return to_device(next(self._it), self.device)
        except Exception as exc:  # a worker died, a shard is unreadable
            raise WorkloadError(f"reading --data: {exc}") from exc


def _gather(values: list[float], session: DistSession, guard: CollectiveGuard, what: str):
    """Every rank's ``values``, by rank, through one bounded allreduce."""
    k = len(values)
    buf = torch.zeros(session.world_size * k, dtype=torch.float64, device=session.device)
    buf[session.rank * k : (session.rank + 1) * k] = torch.tensor(values, dtype=torch.float64)
    with guard.collective(what):
        dist.all_reduce(buf, async_op=True).wait(timeout=guard.timeout)
        return buf.view(session.world_size, k).tolist()


def _phase(
    step: Callable[[Batch], None],
    fetch: Callable[[], Batch],
    steps: int,
    session: DistSession,
    guard: CollectiveGuard,
    what: str,
    fault: Callable[[], None] | None = None,
) -> list[list[float]]:
    """Run ``steps`` steps (then ``fault``, if any, after the first); by rank, every rank's
    ``[elapsed_s, data_wait_s]``."""
    _gather([0.0], session, guard, f"{what}: start barrier")
    wait = 0.0
    start = time.perf_counter()
    for i in range(steps):
        t = time.perf_counter()
        batch = fetch()
        wait += time.perf_counter() - t
        with guard.collective(f"{what}: step {i + 1} of {steps}"):
            step(batch)
        if fault is not None and i == 0:
            fault()
    elapsed = time.perf_counter() - start
    return _gather([elapsed, wait], session, guard, f"{what}: collecting times")


def _inject_fault(config: TrainConfig, session: DistSession) -> None:
    if config.fault_exit_rank == session.rank:
        who = session.describe(session.rank)
        print(f"{PROG}: injected fault: {who} exits now (--fault-exit-rank)", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_INJECTED_FAULT)


def run_workload(
    workload: Workload,
    config: TrainConfig,
    session: DistSession,
    guard: CollectiveGuard,
    out: Callable[[str], None] | None = None,
    first: bool = False,
) -> ModelRun:
    """Measure one workload at every bucket size of the config; every rank gets the result."""
    batch = config.batch or workload.batch
    warmup, steps = config.steps_for()
    amp = config.amp_on(session.device)
    source = _Source(workload, config, session)
    world = session.world_size
    compute_s: float | None = None
    buckets: list[BucketRun] = []
    params = 0
    for index, bucket_mb in enumerate(config.bucket_mb):
        what = f"{workload.name} (bucket {bucket_mb:g} MB)"
        trainer = _Trainer(workload, session, guard, bucket_mb)
        params = trainer.params
        step = functools.partial(trainer.step, amp=amp)
        fault = functools.partial(_inject_fault, config, session) if first and not index else None
        _phase(step, source.next, warmup, session, guard, f"{what} warm-up", fault)
        if index == 0 and config.split:
            with trainer.ddp.no_sync():
                rows = _phase(
                    step, lambda: source.resident, steps, session, guard, f"{what} compute only"
                )
            compute_s = max(r[0] for r in rows) / steps
        rows = _phase(step, source.next, steps, session, guard, f"{what} timed")
        slowest = max(r[0] for r in rows)
        step_s = slowest / steps
        total = world * batch * steps / slowest
        data_wait_s = max(r[1] for r in rows) / steps
        comm = None if compute_s is None else max(0.0, step_s - compute_s - data_wait_s)
        buckets.append(
            BucketRun(
                bucket_mb=bucket_mb,
                step_s=step_s,
                samples_per_s=total,
                samples_per_s_per_rank=total / world,
                rank_samples_per_s=[batch * steps / r[0] for r in rows],
                data_wait_s=data_wait_s,
                comm_wait_s=comm,
                comm_fraction=None if comm is None else comm / step_s,
            )
        )
        if out is not None:
            out(format_bucket(workload.name, buckets[-1], compute_s))
        del trainer, step
        if session.device.type == "cuda":  # the next bucket's model needs the room
            gc.collect()
            torch.cuda.empty_cache()
    best = max(buckets, key=lambda b: b.samples_per_s)
    if out is not None and len(buckets) > 1:
        out(format_best(workload.name, best))
    return ModelRun(
        model=workload.name,
        hf_class=workload.hf_class,
        params=params,
        input_shape=workload.input_shape,
        batch_per_rank=batch,
        warmup_steps=warmup,
        steps=steps,
        amp=amp,
        data="files" if config.data_dir else "synthetic",
        bucket_mb=best.bucket_mb,
        samples_per_s=best.samples_per_s,
        samples_per_s_per_rank=best.samples_per_s_per_rank,
        step_s=best.step_s,
        compute_s=compute_s,
        data_wait_s=best.data_wait_s,
        comm_wait_s=best.comm_wait_s,
        comm_fraction=best.comm_fraction,
        buckets=buckets,
    )


def configure_torch(device: torch.device) -> None:
    """Threads and kernels as a training job would set them."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune once in warm-up
    elif "OMP_NUM_THREADS" not in os.environ:
        # Ranks on one host share its cores; oversubscribing would time contention.
        share = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, share))


def run_models(
    config: TrainConfig,
    session: DistSession,
    guard: CollectiveGuard,
    out: Callable[[str], None] | None = None,
) -> ModelsResult:
    """Measure every workload of the config on an initialised group."""
    configure_torch(session.device)
    if out is not None:
        out(preamble(config, session))
    runs = [
        run_workload(w, config, session, guard, out, first=(i == 0))
        for i, w in enumerate(config.workloads())
    ]
    settings: dict[str, Any] = {"backend": session.backend, "timeout_s": config.timeout_s}
    settings.update(bucket_mb=list(config.bucket_mb), split=config.split, data_dir=config.data_dir)
    settings.update(torch_threads=torch.get_num_threads())
    if config.data_dir:
        settings.update(workers=config.workers, prefetch=config.prefetch)
    return ModelsResult(
        environ=collect_environ(session.hostnames, session.backend),
        metrics=ModelsMetrics(
            preset=config.preset, world_size=session.world_size, runs=runs, settings=settings
        ),
    )
