"""``run_allreduce`` as a library call inside a group the caller initialised."""

import pytest
import torch.distributed as dist

from validation.allreduce import AllreduceConfig, run_allreduce

pytestmark = pytest.mark.unit


def test_run_allreduce_in_a_caller_initialised_group() -> None:
    # Uses the caller's group, gathers host names without all_gather_object
    # (which needs numpy, absent on torch-only nodes and in this venv).
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        lines: list[str] = []
        config = AllreduceConfig(
            min_bytes=1024, max_bytes=8192, iters=2, warmup_iters=1, repeat=2, dtypes=("float16",)
        )
        result = run_allreduce(config, out=lines.append)
    finally:
        dist.destroy_process_group()
    assert [r.size_bytes for r in result.metrics.sizes] == [1024, 2048, 4096, 8192]
    assert all(r.wrong == 0 for r in result.metrics.sizes)
    # One rank moves nothing over a bus: nccl-tests reports busbw 0 there.
    assert all(r.busbw_gbps == 0 and r.algbw_gbps > 0 for r in result.metrics.sizes)
    assert len(result.environ.hostnames) == 1
    assert any(line.startswith("# Avg bus bandwidth") for line in lines)
