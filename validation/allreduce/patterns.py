"""The data the correctness round reduces, and the check of its result.

Every rank fills its buffer with small non-negative integers whose sum over
all ranks is exact in the dtype, whatever order the backend adds them in; so
the result can be compared element for element (no tolerance) with a sum known
analytically, and any difference is corruption, never rounding. The patterns
are periodic: a rank keeps one period (a short table) and tiles it over the
buffer, and the check compares a chunk at a time, so neither needs a second
message-sized buffer.
"""

from __future__ import annotations

import math

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Every integer 0..limit is exact in the dtype (2 ** significand bits), so any
# partial sum of non-negative integers that totals at most this is exact in
# whatever order the backend adds them.
_EXACT_INT_LIMIT = {torch.float32: 2**24, torch.bfloat16: 2**8, torch.float16: 2**11}

# Prime, so the pattern never lines up with power-of-two chunk boundaries and a
# chunk delivered to the wrong offset shows up as wrong values.
_PATTERN_PERIOD_MAX = 97

# Elements compared at a time: bounds the temporary a check needs, whatever the size.
_CHECK_CHUNK = 1 << 20


def pattern_params(world_size: int, dtype: torch.dtype) -> tuple[int, int]:
    """``(period, stride)`` of the test pattern for this group size and dtype.

    Ranks ``r`` with ``r % stride == 0`` contribute ``(i + r) % period`` at
    element ``i``; the others contribute zeros. Both are chosen so that the sum
    over ranks never exceeds the dtype's exact-integer limit, e.g. bfloat16 at
    1024 ranks lets 128 ranks contribute values 0..2.
    """
    limit = _EXACT_INT_LIMIT[dtype]
    stride = math.ceil(world_size / (limit // 2))
    contributors = math.ceil(world_size / stride)
    period = min(_PATTERN_PERIOD_MAX, limit // contributors + 1)
    return period, stride


def rank_table(rank: int, world_size: int, dtype: torch.dtype) -> list[int]:
    """One period of ``rank``'s input pattern (see :func:`pattern_params`)."""
    period, stride = pattern_params(world_size, dtype)
    if rank % stride:
        return [0] * period
    return [(k + rank) % period for k in range(period)]


def expected_table(world_size: int, dtype: torch.dtype) -> list[int]:
    """One period of the exact allreduce sum of every rank's pattern."""
    period, stride = pattern_params(world_size, dtype)
    # Only r % period matters for a contributor, so count contributors per residue.
    per_residue = [0] * period
    for r in range(0, world_size, stride):
        per_residue[r % period] += 1
    return [sum(n * ((k + c) % period) for c, n in enumerate(per_residue)) for k in range(period)]


def fill_periodic(buf: torch.Tensor, period: torch.Tensor) -> None:
    """Write ``period`` repeated over ``buf`` in place, allocating nothing message-sized."""
    p = period.numel()
    full = buf.numel() // p * p
    if full:
        rows = buf[:full].view(-1, p)
        rows.copy_(period.expand_as(rows))
    buf[full:].copy_(period[: buf.numel() - full])


def count_wrong_periodic(buf: torch.Tensor, period: torch.Tensor) -> int:
    """Elements of ``buf`` that differ from ``period`` repeated (NaN counts as wrong),
    compared a chunk at a time so the check costs no message-sized buffer."""
    p = period.numel()
    chunk = max(p, _CHECK_CHUNK // p * p)
    wrong = 0
    for start in range(0, buf.numel(), chunk):
        part = buf[start : start + chunk]
        full = part.numel() // p * p
        if full:
            rows = part[:full].view(-1, p)
            wrong += int(torch.ne(rows, period.expand_as(rows)).sum().item())
        wrong += int(torch.ne(part[full:], period[: part.numel() - full]).sum().item())
    return wrong
