"""Run a playbook of role tasks against inventory hosts on this machine (connection
local): the way unit tests render Kiln's templates and derived variables from a real
inventory without any host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

ROLES = REPO / "roles"


def run_local_playbook(
    work: Path, inventory: dict, playbook: str, extra: dict
) -> subprocess.CompletedProcess[str]:
    """Every host of `inventory` runs locally; `out` (= `work`) and `roles_dir` are added
    to the extra vars, which travel as a file (they may hold secrets of a test stack)."""
    for hostvars in inventory["all"]["hosts"].values():
        hostvars.setdefault("ansible_connection", "local")
    (work / "inventory.json").write_text(json.dumps(inventory))
    (work / "play.yml").write_text(playbook)
    (work / "extra.json").write_text(
        json.dumps({"out": str(work), "roles_dir": str(ROLES), **extra})
    )
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(work / "inventory.json"),
            "-e",
            f"@{work / 'extra.json'}",
            str(work / "play.yml"),
        ],
        env={
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(ROLES),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
