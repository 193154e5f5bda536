"""Shared-filesystem read throughput per host, naming the slow node.

Run on every rank as ``python -m validation.storage DIR`` (:mod:`.cli`), where
DIR is on the shared filesystem (NFS, GlusterFS over FUSE) mounted at the same
path on every node. Each rank writes fresh files, then every rank reads, all at
once, files that a rank on *another* host wrote: that host never had them in
its page cache, so a slow filesystem cannot look fast (lab nodes cannot drop
caches). Reads are certified; writes are reported. The modules, one job each:

* :mod:`.files`: the run directory layout, writing, reading, ``fadvise``,
  preflight and cleanup; plain Python, no collectives.
* :mod:`.plan`: who reads whose files, and the space a run needs.
* :mod:`.result`: the typed result document, per-host aggregates, the slow-host
  flag and the :func:`measurements` certification reads; standard library only.
* :mod:`.report`: the lines rank 0 prints.
* :mod:`.measure`: the phases across ranks (:func:`run_storage`).
* :mod:`.cli`: options, joining the group, exit status.

Importing this package does not import torch: the torch-dependent names below
are loaded on first use, so the control plane can read results.
"""

from __future__ import annotations

import importlib
from typing import Any

from validation.storage.plan import reading_sources
from validation.storage.result import (
    StorageResult,
    flag_slow_hosts,
    measurements,
)

_LAZY = {
    "StorageConfig": "validation.storage.measure",
    "run_storage": "validation.storage.measure",
    "build_parser": "validation.storage.cli",
    "config_from_args": "validation.storage.cli",
    "main": "validation.storage.cli",
}

__all__ = ["StorageResult", "flag_slow_hosts", "measurements", "reading_sources", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validation.storage' has no attribute {name!r}")
