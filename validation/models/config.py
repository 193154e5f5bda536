"""What one run measures (:class:`TrainConfig`); field defaults are the CLI defaults.

Standard library only: the options are checked before torch is imported or a
group is joined, so a bad option costs nothing on any rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from validation.models.presets import DEFAULT_STEPS, Workload, select
from validation.options import check_timeout

#: The command name that prefixes every message, also the CLI's ``prog``.
PROG = "python -m validation.models"


@dataclass(frozen=True)
class TrainConfig:
    """Preset, overrides and measurement options of one ``python -m validation.models`` run."""

    preset: str = "tiny"
    models: tuple[str, ...] = ()
    """Workloads of the preset to run, in order; empty: all of them."""
    batch: int | None = None
    """Samples per rank per step; None: each workload's default."""
    warmup: int | None = None
    """Untimed steps per bucket size; None: the preset's default."""
    steps: int | None = None
    """Timed steps per phase; None: the preset's default."""
    amp: bool | None = None
    """bf16 autocast; None: on for CUDA, off on CPU."""
    bucket_mb: tuple[float, ...] = (25.0,)
    """DDP bucket sizes to measure, one timed phase each; the best is reported."""
    split: bool = True
    """Time ``no_sync`` steps too, to split step time into compute and communication."""
    data_dir: str | None = None
    """Read shards from here instead of synthetic batches."""
    workers: int = 4
    prefetch: int = 2
    backend: str = "auto"
    timeout_s: float = 300.0
    json_path: str | None = None
    fault_exit_rank: int | None = None

    def __post_init__(self) -> None:
        self.workloads()  # raises on an unknown preset or model
        for name, value, least in (
            ("--batch", self.batch, 1),
            ("--warmup", self.warmup, 1),
            ("--steps", self.steps, 1),
            ("--workers", self.workers, 0),
            ("--prefetch", self.prefetch, 1),
        ):
            if value is not None and value < least:
                hint = (
                    " (DDP rebuilds its buckets after the first step)" if name == "--warmup" else ""
                )
                raise ValueError(f"{name} must be at least {least}, got {value}{hint}")
        if not self.bucket_mb or not all(mb > 0 for mb in self.bucket_mb):
            raise ValueError(f"bucket sizes must be positive MB, got {list(self.bucket_mb)}")
        check_timeout(self.timeout_s)

    def workloads(self) -> tuple[Workload, ...]:
        """The workloads to run, in order."""
        return select(self.preset, self.models)

    def steps_for(self) -> tuple[int, int]:
        """(warm-up steps, timed steps) with the preset's defaults filled in."""
        warmup, steps = DEFAULT_STEPS[self.preset]
        return self.warmup or warmup, self.steps or steps

    def amp_on(self, device: Any) -> bool:
        """Whether to autocast to bf16 on ``device`` (a torch.device)."""
        return self.amp if self.amp is not None else device.type == "cuda"
