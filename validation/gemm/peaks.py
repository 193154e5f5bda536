"""Dense peak TFLOPS per GPU model and dtype, matched from ``torch.cuda.get_device_name()``.

Standard library only. Every figure is NVIDIA's own, for *dense* math: the
datasheets print tensor-core figures "with sparsity" (2:4 structured), which
are twice the dense rate, so those are halved here. A model that is not in
the table has no peak: :func:`lookup` returns None and the result says so;
a guessed peak would make a fraction-of-peak rule pass or fail on fiction.

Names are matched whole (case and spacing aside), so a variant with other
clocks (H100 NVL, H200 NVL, H800, L40 without the S) is never mistaken for
the part in the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: The dtypes the benchmark measures, in the order it measures them.
#: ``tf32`` is float32 storage with TF32 tensor-core math
#: (``torch.backends.cuda.matmul.allow_tf32 = True``); ``fp32`` is IEEE float32.
DTYPES = ("bf16", "fp16", "tf32", "fp32")


@dataclass(frozen=True)
class GpuPeak:
    """One GPU model's dense peaks and where they come from."""

    model: str
    """Short model name, e.g. ``H100 SXM5``."""
    tflops: Mapping[str, float] = field(default_factory=dict)
    """Dense peak TFLOPS per dtype of :data:`DTYPES`."""
    source: str = ""


def _peaks(bf16: float, fp16: float, tf32: float, fp32: float) -> Mapping[str, float]:
    return MappingProxyType({"bf16": bf16, "fp16": fp16, "tf32": tf32, "fp32": fp32})


# NVIDIA A100 Tensor Core GPU datasheet (2021), SXM and PCIe columns (same peaks):
# FP32 19.5; TF32 156 (312 with sparsity); BF16 and FP16 312 (624 with sparsity).
A100 = _peaks(bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5)
A100_SOURCE = "NVIDIA A100 Tensor Core GPU datasheet; dense = half the sparsity figures"

# NVIDIA H100 Tensor Core GPU Architecture whitepaper, H100 SXM5 column (dense):
# FP32 66.9; TF32 494.7; FP16 and BF16 989.4. The datasheet rounds them
# (67; 989, 1,979 with sparsity).
H100_SXM = _peaks(bf16=989.4, fp16=989.4, tf32=494.7, fp32=66.9)
H100_SXM_SOURCE = "NVIDIA H100 Tensor Core GPU Architecture whitepaper, H100 SXM5, dense"

# NVIDIA H100 datasheet, H100 PCIe column: FP32 51; TF32 756, BF16 and FP16 1,513,
# all with sparsity (dense is half).
H100_PCIE = _peaks(bf16=756.5, fp16=756.5, tf32=378.0, fp32=51.0)
H100_PCIE_SOURCE = "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe; dense = half sparsity"

# NVIDIA H200 datasheet, H200 SXM column: FP32 67; TF32 989, BF16 and FP16 1,979
# with sparsity. The same GH100 compute at the same clocks as H100 SXM5 (only the
# memory differs), so the whitepaper's exact dense H100 SXM5 figures apply.
H200_SXM = H100_SXM
H200_SXM_SOURCE = "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM (compute as H100 SXM5)"

# NVIDIA L40S datasheet: FP32 91.6; TF32 183 (366 with sparsity);
# BF16 and FP16 362.05 (733 with sparsity).
L40S = _peaks(bf16=362.05, fp16=362.05, tf32=183.0, fp32=91.6)
L40S_SOURCE = "NVIDIA L40S datasheet, dense figures"

#: (pattern matched against the whole normalised device name, peaks).
TABLE: tuple[tuple[re.Pattern[str], GpuPeak], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), peak)
    for pattern, peak in (
        # "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM-80GB"
        (r"A100-SXM4?-(40|80)GB", GpuPeak("A100 SXM4", A100, A100_SOURCE)),
        # "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe"
        (r"A100-PCIE-40GB|A100 80GB PCIE", GpuPeak("A100 PCIe", A100, A100_SOURCE)),
        # "NVIDIA H100 80GB HBM3" (SXM5), "NVIDIA H100 SXM5 80GB"
        (r"H100 80GB HBM3|H100 SXM5?( \d+GB)?", GpuPeak("H100 SXM5", H100_SXM, H100_SXM_SOURCE)),
        # "NVIDIA H100 PCIe"
        (r"H100 PCIE( \d+GB)?", GpuPeak("H100 PCIe", H100_PCIE, H100_PCIE_SOURCE)),
        # "NVIDIA H200" (SXM); not "NVIDIA H200 NVL", which runs at lower clocks
        (r"H200( SXM)?( 141GB( HBM3E)?)?", GpuPeak("H200 SXM", H200_SXM, H200_SXM_SOURCE)),
        # "NVIDIA L40S"; not "NVIDIA L40"
        (r"L40S", GpuPeak("L40S", L40S, L40S_SOURCE)),
    )
)


def normalise(device_name: str) -> str:
    """The name without the ``NVIDIA`` prefix and with single spaces."""
    name = " ".join(device_name.split())
    return re.sub(r"^NVIDIA\s+", "", name, flags=re.IGNORECASE)


def lookup(device_name: str) -> GpuPeak | None:
    """The table entry for a ``torch.cuda.get_device_name()`` string, None if unknown."""
    name = normalise(device_name)
    for pattern, peak in TABLE:
        if pattern.fullmatch(name):
            return peak
    return None


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """Dense peak TFLOPS of ``dtype`` on this device; None when the model is unknown."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    peak = lookup(device_name)
    return None if peak is None else peak.tflops.get(dtype)


def known_models() -> list[str]:
    """Models with a peak, for messages that say what the table covers."""
    return list(dict.fromkeys(peak.model for _, peak in TABLE))
