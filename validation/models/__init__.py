"""Training-scaling benchmark: DDP steps of transformers models, samples/s per rank and total.

Run on every rank as ``python -m validation.models`` (:mod:`.cli`). The
modules, one job each:

* :mod:`.presets`: the workloads (model config, input shape, batch) of the
  ``full`` and ``tiny`` presets, and building a model from its config.
* :mod:`.config`: the options of one run, checked before anything starts.
* :mod:`.data`: synthetic batches, the on-disk dataset format, its loader.
* :mod:`.train`: the timed DDP loop on an initialised group (:func:`run_models`).
* :mod:`.report`: the lines rank 0 prints.
* :mod:`.result`: the result document and its flat measurements; standard
  library only, so the control plane reads results without torch.
* :mod:`.cli`: options, joining the group, exit status.

Importing this package imports neither torch nor transformers: every name
below is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PRESETS": "validation.models.presets",
    "Workload": "validation.models.presets",
    "TrainConfig": "validation.models.config",
    "ModelsResult": "validation.models.result",
    "measurements": "validation.models.result",
    "run_models": "validation.models.train",
    "build_parser": "validation.models.cli",
    "config_from_args": "validation.models.cli",
    "main": "validation.models.cli",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validation.models' has no attribute {name!r}")
