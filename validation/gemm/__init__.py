"""Per-GPU dense matmul throughput, against each GPU model's published dense peak.

Run on every rank as ``python -m validation.gemm`` (:mod:`.cli`), one rank per
GPU, so that every GPU of a node is measured and a slow one can be named. The
modules, one job each:

* :mod:`.peaks`: the dense peak TFLOPS table and the device-name lookup;
  standard library only.
* :mod:`.result`: the typed document, its parser and its measurements;
  standard library only, so certification reads results without torch.
* :mod:`.measure`: the timed matmuls on this rank's device, and the gather.
* :mod:`.report`: the human table rank 0 prints.
* :mod:`.cli`: options, joining the group, exit status.

Importing this package does not import torch: the torch-dependent names below
are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from validation.gemm.peaks import DTYPES, lookup, peak_tflops
from validation.gemm.result import GemmResult, matmul_flops, measurements

_LAZY = {
    "GemmConfig": "validation.gemm.measure",
    "run_gemm": "validation.gemm.measure",
    "build_parser": "validation.gemm.cli",
    "config_from_args": "validation.gemm.cli",
    "main": "validation.gemm.cli",
}

__all__ = ["DTYPES", "GemmResult", "lookup", "matmul_flops", "measurements", "peak_tflops", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validation.gemm' has no attribute {name!r}")
