"""Where Kiln keeps its state and caches on the machine it runs on.

Process-wide, not lab-specific: provisioning artifacts, munge keys,
certification results and lab machines all live under the state root.
Kept outside the repository: root filesystems are hundreds of MB, and this
state belongs to the machine, not to a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_ROOT = Path("/var/lib/kiln")
DEFAULT_CACHE_ROOT = Path("/var/cache/kiln")


def state_root() -> Path:
    """Labs, provisioning artifacts, secrets, certifications (override: KILN_STATE_DIR)."""
    return Path(os.environ.get("KILN_STATE_DIR", DEFAULT_STATE_ROOT))


def cache_root() -> Path:
    """Rebuildable caches: lab root filesystems, the wheelhouse (override: KILN_CACHE_DIR)."""
    return Path(os.environ.get("KILN_CACHE_DIR", DEFAULT_CACHE_ROOT))
