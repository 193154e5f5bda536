"""Message sizes and the bus-bandwidth factor, as nccl-tests defines them.

Standard library only (element sizes are plain ints): the control plane can
plan or explain a sweep without importing torch.

* A sweep runs from ``--min-bytes`` to ``--max-bytes``, each size ``--factor``
  times the previous, rounded down to whole elements (nccl-tests ``-b -e -f``).
* ``algbw = bytes / time`` and ``busbw = algbw * 2(n-1)/n`` in GB/s (1e9),
  following nccl-tests ``doc/PERFORMANCE.md``.
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


def bus_bandwidth_factor(n: int) -> float:
    """nccl-tests' allreduce bus factor ``2*(n-1)/n``: 0 for one rank, 1 for two, 1.75 for 8."""
    if n < 1:
        raise ValueError(f"world size must be at least 1, got {n}")
    return 2 * (n - 1) / n


def parse_size(text: str) -> int:
    """Bytes from ``1024``, ``64K``, ``32M``, ``1G`` (powers of 1024, as nccl-tests)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 8, 64K, 32M, 1G)")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * scale


def sweep_sizes(min_bytes: int, max_bytes: int, factor: float, elem_size: int) -> list[int]:
    """Message sizes in bytes: ``min * factor**k`` up to ``max``, like nccl-tests ``-b -e -f``.

    Each size is rounded down to a whole number of elements (at least one);
    sizes that become equal after rounding appear once.
    """
    if elem_size < 1:
        raise ValueError(f"element size must be positive, got {elem_size}")
    if min_bytes < 1:
        raise ValueError(f"--min-bytes must be at least 1, got {min_bytes}")
    if max_bytes < min_bytes:
        raise ValueError(f"--max-bytes ({max_bytes}) is smaller than --min-bytes ({min_bytes})")
    if factor <= 1 and max_bytes > min_bytes:
        raise ValueError(f"--factor must be greater than 1 to sweep sizes, got {factor:g}")
    sizes: list[int] = []
    k = 0
    while True:
        # Small epsilon so that e.g. 1000 * 1.1**k does not lose a byte to float error.
        raw = int(min_bytes * factor**k + 1e-6) if k else min_bytes
        if raw > max_bytes:
            break
        size = max(elem_size, raw - raw % elem_size)
        if not sizes or size != sizes[-1]:
            sizes.append(size)
        if factor <= 1:
            break
        k += 1
    return sizes
