"""The arithmetic behind the allreduce numbers: bus factor, size sweep, data pattern, check."""

import random

import pytest
import torch

from validation.allreduce.patterns import (
    count_wrong_periodic,
    expected_table,
    fill_periodic,
    pattern_params,
    rank_table,
)
from validation.allreduce.sizes import bus_bandwidth_factor, parse_size, sweep_sizes

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("n", "factor"), [(1, 0.0), (2, 1.0), (8, 1.75)])
def test_bus_bandwidth_factor_matches_nccl_tests(n: int, factor: float) -> None:
    # nccl-tests doc/PERFORMANCE.md: busbw = algbw * 2(n-1)/n; one rank moves no data.
    assert bus_bandwidth_factor(n) == factor


def test_bus_bandwidth_factor_rejects_empty_group() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bus_bandwidth_factor(0)


@pytest.mark.parametrize(
    ("min_bytes", "max_bytes", "factor", "elem", "sizes"),
    [
        (8, 64, 2, 4, [8, 16, 32, 64]),
        # 6 is not a multiple of 4: rounded down to 4; 12, 24, 48, 96 are; 192 > 100.
        (6, 100, 2, 4, [4, 12, 24, 48, 96]),
        # 1 and 2 bytes both round up to one float32 element; it appears once.
        (1, 8, 2, 4, [4, 8]),
        (1024, 10 * 1024, 3, 4, [1024, 3072, 9216]),
        (1001, 1001, 2, 2, [1000]),
        # A message is never empty, even when max is below one element.
        (3, 3, 2, 4, [4]),
    ],
)
def test_sweep_sizes(min_bytes: int, max_bytes: int, factor: float, elem: int, sizes: list[int]):
    assert sweep_sizes(min_bytes, max_bytes, factor, elem) == sizes


def test_sweep_1k_to_1m_is_every_power_of_two_in_whole_elements() -> None:
    sizes = sweep_sizes(1024, 1024**2, 2, 2)
    assert sizes == [1024 * 2**k for k in range(11)]


def test_fractional_factor_sweep_is_increasing_and_element_aligned() -> None:
    sizes = sweep_sizes(10, 1000, 1.5, 4)
    assert sizes == sorted(set(sizes))
    assert all(s % 4 == 0 for s in sizes)
    assert sizes[0] == 8 and sizes[-1] <= 1000 and len(sizes) > 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((64, 8, 2, 4), "--max-bytes"),
        ((8, 64, 1, 4), "--factor"),
        ((0, 64, 2, 4), "--min-bytes"),
    ],
)
def test_sweep_rejects_bad_options_naming_them(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sweep_sizes(*args)


@pytest.mark.parametrize(
    ("text", "value"),
    [("8", 8), ("64K", 65536), ("32M", 32 * 1024**2), ("1g", 1024**3), ("4KiB", 4096)],
)
def test_parse_size_uses_powers_of_1024_like_nccl_tests(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("12 parsecs")


def _filled(table: list[int], count: int, dtype: torch.dtype) -> torch.Tensor:
    # The benchmark's own path: a message-sized buffer tiled with one period.
    buf = torch.empty(count, dtype=dtype)
    fill_periodic(buf, torch.tensor(table, dtype=dtype))
    return buf


@pytest.mark.parametrize(
    ("world_size", "dtype"),
    [
        (2, torch.float32),
        (3, torch.bfloat16),
        (8, torch.bfloat16),
        (8, torch.float16),
        (300, torch.bfloat16),  # more ranks than bfloat16 has exact integers
        (1000, torch.float16),
    ],
)
def test_pattern_sums_exactly_in_any_reduction_order(world_size: int, dtype: torch.dtype):
    # The check must never report rounding as #wrong: reduce in the dtype itself,
    # in a random order, and the result must equal the analytic expectation.
    count = 500
    expected = torch.tensor(expected_table(world_size, dtype), dtype=dtype)
    order = list(range(world_size))
    random.Random(world_size).shuffle(order)
    acc = torch.zeros(count, dtype=dtype)
    for rank in order:
        acc += _filled(rank_table(rank, world_size, dtype), count, dtype)
    assert count_wrong_periodic(acc, expected) == 0
    exact = sum(
        _filled(rank_table(r, world_size, dtype), count, dtype).double() for r in range(world_size)
    )
    assert torch.equal(_filled(expected_table(world_size, dtype), count, dtype).double(), exact)


def test_pattern_depends_on_position_and_rank() -> None:
    # A constant pattern would hide chunks delivered to the wrong offset.
    assert len(set(expected_table(8, torch.bfloat16))) > 10
    assert rank_table(0, 8, torch.bfloat16) != rank_table(1, 8, torch.bfloat16)
    period, _ = pattern_params(8, torch.bfloat16)
    assert period > 1


def test_check_counts_exactly_the_corrupted_elements() -> None:
    table = torch.tensor(expected_table(3, torch.bfloat16), dtype=torch.bfloat16)
    result = _filled(table.tolist(), 4096, torch.bfloat16)
    assert count_wrong_periodic(result, table) == 0
    corrupted = [0, 17, 2048, 4095]
    result[corrupted] += 1
    result[100] = float("nan")  # NaN is wrong, not silently equal
    assert count_wrong_periodic(result, table) == len(corrupted) + 1


def test_check_catches_a_misplaced_chunk() -> None:
    # A ring step that lands a 256-element chunk at the wrong offset.
    table = torch.tensor(expected_table(4, torch.float32), dtype=torch.float32)
    result = _filled(table.tolist(), 1024, torch.float32)
    result[256:512] = result[512:768].clone()
    assert count_wrong_periodic(result, table) > 200


def test_zero_check_counts_what_the_timed_rounds_left_non_zero() -> None:
    # After the timed rounds the buffer must hold exact zeros: a one-element period.
    buf = torch.zeros(3000, dtype=torch.float16)
    zero = torch.zeros(1, dtype=torch.float16)
    assert count_wrong_periodic(buf, zero) == 0
    buf[[5, 2999]] = 1
    assert count_wrong_periodic(buf, zero) == 2


def test_periodic_check_counts_exactly_the_corrupted_elements_without_a_full_expected_buffer():
    table = torch.tensor(expected_table(3, torch.float32), dtype=torch.float32)
    # Odd length: a partial period at the end, and several check chunks.
    buf = torch.empty(3 * (1 << 20) + 7, dtype=torch.float32)
    fill_periodic(buf, table)
    assert count_wrong_periodic(buf, table) == 0
    assert torch.equal(buf[: table.numel()], table)
    corrupted = [0, 1 << 20, (1 << 21) + 5, buf.numel() - 1]
    for i in corrupted:
        buf[i] += 1
    buf[17] = float("nan")
    assert count_wrong_periodic(buf, table) == len(corrupted) + 1
