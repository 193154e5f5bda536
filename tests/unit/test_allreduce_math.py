"""The arithmetic behind the allreduce numbers: bus factor, size sweep, data pattern, check."""

import random

import pytest
import torch

from validation.allreduce import (
    bus_bandwidth_factor,
    check_result,
    expected_sum,
    parse_size,
    pattern_params,
    rank_pattern,
    sweep_sizes,
)

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
    expected = expected_sum(world_size, dtype, count)
    order = list(range(world_size))
    random.Random(world_size).shuffle(order)
    acc = torch.zeros(count, dtype=dtype)
    for rank in order:
        acc += rank_pattern(rank, world_size, dtype, count)
    assert check_result(acc, expected) == 0
    exact = sum(rank_pattern(r, world_size, dtype, count).double() for r in range(world_size))
    assert torch.equal(expected.double(), exact)


def test_pattern_depends_on_position_and_rank() -> None:
    # A constant pattern would hide chunks delivered to the wrong offset.
    expected = expected_sum(8, torch.bfloat16, 1000)
    assert len(torch.unique(expected)) > 10
    assert not torch.equal(
        rank_pattern(0, 8, torch.bfloat16, 100), rank_pattern(1, 8, torch.bfloat16, 100)
    )
    period, _ = pattern_params(8, torch.bfloat16)
    assert period > 1


def test_check_counts_exactly_the_corrupted_elements() -> None:
    expected = expected_sum(3, torch.bfloat16, 4096)
    result = expected.clone()
    assert check_result(result, expected) == 0
    corrupted = [0, 17, 2048, 4095]
    result[corrupted] += 1
    result[100] = float("nan")  # NaN is wrong, not silently equal
    assert check_result(result, expected) == len(corrupted) + 1


def test_check_catches_a_misplaced_chunk() -> None:
    # A ring step that lands a 256-element chunk at the wrong offset.
    expected = expected_sum(4, torch.float32, 1024)
    result = expected.clone()
    result[256:512] = expected[512:768]
    assert check_result(result, expected) > 200


def test_check_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="does not match"):
        check_result(torch.zeros(3), torch.zeros(4))


def test_periodic_check_counts_exactly_the_corrupted_elements_without_a_full_expected_buffer():
    from validation.allreduce import count_wrong_periodic, expected_table, fill_periodic

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
