"""The control plane never imports torch: `kiln certify`, the CLI and the launchers that
start processes elsewhere must start fast on a host without it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

MODULES = [
    "kiln.cli",
    "kiln.certify",
    "kiln.certification.run",
    "kiln.certification.report",
    "validation.launch.ssh",
    "validation.launch.slurm",
    "validation.launch.kubernetes",
    "validation.launch.local",
    "validation.results",
    "validation.allreduce.sizes",
    "validation.options",
    "validation.scaling",
    # Result readers: certification reads every benchmark's documents without torch.
    "validation.gemm.result",
    "validation.storage.result",
    "validation.models.result",
    "validation.models.config",
]


def test_importing_the_control_plane_does_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert run.stdout.strip() == "[]", run.stdout
