"""Allreduce bus-bandwidth benchmark with nccl-tests semantics.

Run on every rank as ``python -m validation.allreduce`` (:mod:`.cli`). The
modules, one job each:

* :mod:`.sizes`: the size sweep and the bus factor; standard library only.
* :mod:`.patterns`: the data the correctness round reduces, and its check.
* :mod:`.measure`: the timed sweep on an initialised group (:func:`run_allreduce`).
* :mod:`.report`: the human table.
* :mod:`.cli`: options, joining the group, exit status.

Importing this package does not import torch: the torch-dependent names below
are loaded on first use, so the control plane can use :mod:`.sizes`.
"""

from __future__ import annotations

import importlib
from typing import Any

from validation.allreduce.sizes import bus_bandwidth_factor, parse_size, sweep_sizes

_LAZY = {
    "AllreduceConfig": "validation.allreduce.measure",
    "run_allreduce": "validation.allreduce.measure",
    "build_parser": "validation.allreduce.cli",
    "config_from_args": "validation.allreduce.cli",
    "main": "validation.allreduce.cli",
}

__all__ = ["bus_bandwidth_factor", "parse_size", "sweep_sizes", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validation.allreduce' has no attribute {name!r}")
