"""What the benchmark-fidelity benches share: a lab with only the validation runtime
provisioned, a bare script of the bench's own on every node, and SSH to the nodes."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kiln.lab.lifecycle import Lab
from kiln.provision import ProvisionResult, provision
from kiln.role_defaults import validation_runtime_dir


def ssh(lab: Lab, node: str, command: str, **kwargs) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    """Run `command` on a lab node over the lab's own ssh_config (host keys verified)."""
    return subprocess.run(
        ["ssh", "-F", str(lab.layout.ssh_config), node, command],
        capture_output=True,
        text=True,
        check=True,
        **kwargs,
    )


def provision_runtime(lab: Lab) -> ProvisionResult:
    """Boot (or reuse) the lab and apply only the validation_runtime role."""
    lab.up()
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as play:
        play.write("- hosts: all\n  become: true\n  roles: [validation_runtime]\n")
    try:
        return provision(lab.cluster, playbook=Path(play.name))
    finally:
        Path(play.name).unlink(missing_ok=True)


def install_script(lab: Lab, nodes: Iterable[str], module: str, text: str) -> None:
    """Put a bench's own script beside the suite on every node, as `python -m module`."""
    for node in nodes:
        ssh(lab, node, f"cat > {validation_runtime_dir()}/{module}.py", input=text)
