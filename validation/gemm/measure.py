"""The timed matmul on this rank's device, and gathering every rank's record.

* What is timed: ``C = A·B`` with square ``M = N = K`` operands, written into a
  preallocated ``C`` so that allocation is never timed. ``--warmup-iters``
  untimed matmuls (cuBLAS picks its kernel, clocks ramp up), then ``--repeat``
  loops of ``--iters`` back-to-back matmuls, each loop timed as a whole: CUDA
  events around the enqueued loop and a synchronize on GPU, ``perf_counter``
  on CPU. TFLOPS come from the median loop; min and max show the spread.
* All ranks start each dtype together (a barrier), so the GPUs of a node run
  at once and share its power and cooling as in training.
* ``tf32`` is float32 with ``torch.backends.cuda.matmul.allow_tf32 = True``;
  ``fp32`` sets it False, so that the two never get mixed up whatever the
  process default is. Both are restored afterwards.
* On CPU each rank uses its share of the cores (cores / ranks on the host):
  ranks that each start one thread per core would fight over them.
* A matmul that fails (dtype unsupported, out of memory) is recorded with its
  reason rather than ending the run: the other dtypes still count.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from validation.gemm.peaks import DTYPES, known_models, lookup
from validation.gemm.result import (
    DtypeRun,
    GemmMetrics,
    GemmResult,
    GpuRun,
    matmul_flops,
)
from validation.guard import CollectiveGuard, short_reason
from validation.options import check_counts, check_names, check_timeout
from validation.rendezvous import DistSession
from validation.results import collect_environ

#: The command name that prefixes every message, also the CLI's ``prog``.
PROG = "python -m validation.gemm"

#: Default M = N = K: large enough to saturate a datacenter GPU's tensor cores,
#: small enough (a few hundred MB) to fit beside a job; a CPU run is a smoke test.
DEFAULT_SIZE = {"cuda": 8192, "cpu": 1024}

TORCH_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "tf32": torch.float32,
    "fp32": torch.float32,
}


@dataclass(frozen=True)
class GemmConfig:
    """What to measure; field defaults are the CLI defaults (None: chosen per device)."""

    size: int | None = None
    dtypes: tuple[str, ...] | None = None
    warmup_iters: int = 10
    iters: int = 20
    repeat: int = 5
    device: str = "auto"
    timeout_s: float = 300.0
    json_path: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError(f"--size must be at least 1, got {self.size}")
        if self.dtypes is not None:
            check_names("--dtype", self.dtypes, DTYPES)
        check_counts(
            ("--warmup-iters", self.warmup_iters, 0),
            ("--iters", self.iters, 1),
            ("--repeat", self.repeat, 1),
        )
        check_timeout(self.timeout_s)
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device must be auto, cuda or cpu, got {self.device!r}")

    def device_type(self) -> str:
        """``cuda`` or ``cpu``: auto means cuda when torch sees a GPU."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_size(self, device_type: str) -> int:
        """M = N = K for this device."""
        return self.size if self.size is not None else DEFAULT_SIZE[device_type]

    def resolved_dtypes(self, device_type: str) -> tuple[str, ...]:
        """The dtypes to measure on this device."""
        if self.dtypes is not None:
            return self.dtypes
        if device_type == "cuda":
            return DTYPES
        return ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 math in hardware (AVX512-BF16, AMX, Arm BF16).

    Without it torch emulates bf16 matmuls about a hundred times slower than
    fp32, which says nothing about the machine; the default then skips bf16.
    """
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        return False
    flags = set(text.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"}) or (
        platform.machine() in ("aarch64", "arm64") and "bf16" in flags
    )


@contextmanager
def _matmul_mode(dtype: str) -> Iterator[None]:
    """TF32 tensor-core math on for ``tf32``, off for ``fp32``; restored afterwards."""
    before = torch.backends.cuda.matmul.allow_tf32
    if dtype in ("tf32", "fp32"):
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def time_matmuls(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, warmup: int, iters: int, repeat: int
) -> list[float]:
    """Seconds per matmul of each of ``repeat`` timed loops of ``iters`` matmuls."""
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    times = []
    if a.device.type == "cuda":
        torch.cuda.synchronize(a.device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        for _ in range(repeat):
            # The whole loop is enqueued before the end event, so the GPU never
            # waits for Python between matmuls.
            start.record()
            for _ in range(iters):
                torch.matmul(a, b, out=out)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / iters)
        return times
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b, out=out)
        times.append((time.perf_counter() - t0) / iters)
    return times


def measure_dtype(
    dtype: str, size: int, config: GemmConfig, device: torch.device, device_name: str
) -> DtypeRun:
    """Time one dtype on this rank's device and relate it to the model's peak."""
    flops = matmul_flops(size, size, size)
    try:
        with _matmul_mode(dtype):
            generator = torch.Generator(device=device).manual_seed(0)
            shape = (size, size)
            kind = TORCH_DTYPES[dtype]
            a = torch.randn(shape, generator=generator, device=device).to(kind)
            b = torch.randn(shape, generator=generator, device=device).to(kind)
            out = torch.empty(shape, dtype=kind, device=device)
            times = time_matmuls(a, b, out, config.warmup_iters, config.iters, config.repeat)
            del a, b, out
    except RuntimeError as exc:  # unsupported dtype, out of memory, a CUDA error
        return DtypeRun(dtype, None, reason=f"{dtype} matmul failed: {short_reason(exc)}")
    finally:
        if device.type == "cuda":
            # After a CUDA error this raises too; the error is recorded above.
            with contextlib.suppress(RuntimeError):
                torch.cuda.empty_cache()
    median = statistics.median(times)
    tflops = flops / median / 1e12 if median > 0 else None
    peak, reason = _peak(device, device_name, dtype)
    fraction = tflops / peak if peak and tflops is not None else None
    if tflops is None:
        reason = f"{dtype}: timer resolution too coarse for {size}x{size}"
    return DtypeRun(
        dtype=dtype,
        tflops=tflops,
        time_ms_median=median * 1e3,
        time_ms_min=min(times) * 1e3,
        time_ms_max=max(times) * 1e3,
        peak_tflops=peak,
        fraction_of_peak=fraction,
        reason=reason,
    )


def _peak(device: torch.device, device_name: str, dtype: str) -> tuple[float | None, str | None]:
    """Dense peak TFLOPS, or None and why there is none."""
    if device.type != "cuda":
        return None, "no peak for CPUs: the peak table covers NVIDIA GPUs only"
    entry = lookup(device_name)
    if entry is None:
        return None, (
            f"no peak known for {device_name!r} (the table has {', '.join(known_models())}); "
            "never guessed"
        )
    peak = entry.tflops.get(dtype)
    if peak is None:
        return None, f"no {dtype} peak known for {entry.model}"
    return peak, None


def _pci_bus_id(device: torch.device) -> str | None:
    """The board's PCI address in nvidia-smi's form, where torch exposes it."""
    try:
        props = torch.cuda.get_device_properties(device)
        return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def measure_rank(config: GemmConfig, session: DistSession, guard: CollectiveGuard) -> GpuRun:
    """Every configured dtype on this rank's device, each started on all ranks at once."""
    device = session.device
    device_type = device.type
    if device_type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        gpu_index: int | None = device.index
        gpus_on_host: int | None = torch.cuda.device_count()
        bus_id = _pci_bus_id(device)
        entry = lookup(device_name)
    else:
        device_name, gpu_index, gpus_on_host, bus_id, entry = "cpu", None, None, None, None
    size = config.resolved_size(device_type)
    results = []
    for dtype in config.resolved_dtypes(device_type):
        guard.barrier(f"start of the {dtype} matmuls")
        results.append(measure_dtype(dtype, size, config, device, device_name))
    return GpuRun(
        rank=session.rank,
        host=session.hostnames[session.rank],
        gpu_index=gpu_index,
        device=device_name,
        results=results,
        peak_model=entry.model if entry else None,
        gpus_on_host=gpus_on_host,
        pci_bus_id=bus_id,
    )


def gather_records(record: GpuRun, session: DistSession, guard: CollectiveGuard) -> list[GpuRun]:
    """Every rank's record, in rank order, through bounded all_gathers of small tensors.

    Two rounds: the byte lengths, then the JSON texts padded to the longest.
    Not ``all_gather_object``: it needs numpy, which torch-only nodes may lack.
    """
    device, world = session.device, session.world_size
    data = json.dumps(asdict(record)).encode()
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    with guard.collective("gathering per-GPU results (lengths)"):
        dist.all_gather(lengths, length, async_op=True).wait(timeout=guard.timeout)
    sizes = [int(t.item()) for t in lengths]
    buf = torch.zeros(max(sizes), dtype=torch.uint8, device=device)
    buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8, device=device)
    bufs = [torch.empty_like(buf) for _ in range(world)]
    with guard.collective("gathering per-GPU results"):
        dist.all_gather(bufs, buf, async_op=True).wait(timeout=guard.timeout)
    texts = [bytes(b[:n].cpu().tolist()).decode() for b, n in zip(bufs, sizes, strict=True)]
    return [GpuRun.from_dict(json.loads(t), f"rank {r}") for r, t in enumerate(texts)]


def cpu_threads(local_world_size: int) -> int:
    """Threads for one CPU rank: its share of this host's cores, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, local_world_size))


def run_gemm(config: GemmConfig, session: DistSession, guard: CollectiveGuard) -> GemmResult:
    """Measure on every rank; every rank gets the gathered result (rank 0 writes it).

    Raises :class:`~validation.guard.CollectiveError` naming ranks that stop answering.
    """
    device_type = session.device.type
    settings: dict[str, object] = {
        "warmup_iters": config.warmup_iters,
        "iters": config.iters,
        "repeat": config.repeat,
        "timeout_s": config.timeout_s,
        "device": device_type,
    }
    if device_type == "cpu":
        threads = cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(threads)
        settings["threads_per_rank"] = threads
    record = measure_rank(config, session, guard)
    size = config.resolved_size(device_type)
    metrics = GemmMetrics(
        m=size,
        n=size,
        k=size,
        dtypes=list(config.resolved_dtypes(device_type)),
        gpus=gather_records(record, session, guard),
        settings=settings,
    )
    return GemmResult(environ=collect_environ(session.hostnames, session.backend), metrics=metrics)
