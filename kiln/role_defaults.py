"""Read a role's `defaults/main.yml`: the one source of facts roles own (ports, paths).

Python code that must agree with a role (where the validation runtime lives,
which port node_exporter listens on) reads the value here instead of writing it
again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"


@functools.cache
def defaults(role: str) -> dict[str, Any]:
    """The role's defaults as written (Jinja expressions are not evaluated)."""
    return yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {}


def validation_runtime_dir() -> str:
    """Where the validation_runtime role installs the suite on every node."""
    return str(defaults("validation_runtime")["validation_runtime_dir"])


def validation_venv() -> str:
    """The runtime's venv (the role's `validation_runtime_venv` is `<dir>/venv`)."""
    return f"{validation_runtime_dir()}/venv"


def validation_python() -> str:
    """The runtime's interpreter."""
    return f"{validation_venv()}/bin/python"


def validation_runtime() -> dict[str, str]:
    """Where the launchers run the suite on a node: their `python` and `remote_dir`."""
    return {"python": validation_python(), "remote_dir": validation_runtime_dir()}


def node_exporter_textfile_dir() -> str:
    """Where node_exporter's textfile collector reads *.prom files."""
    return str(defaults("node_exporter")["node_exporter_textfile_dir"])


def node_exporter_port() -> int:
    """The port node_exporter listens on, on every host (Prometheus scrapes it there)."""
    return _port(defaults("node_exporter")["node_exporter_listen_address"])


def prometheus_port() -> int:
    """The port of the Prometheus server's listen address."""
    return _port(defaults("prometheus")["prometheus_listen_address"])


def prometheus_client_file() -> str:
    """Where the prometheus role says how to reach and log in to the server (no secret)."""
    return str(defaults("prometheus")["prometheus_client_file"])


def _port(listen_address: object) -> int:
    """The port of a `host:port` listen address."""
    return int(str(listen_address).rsplit(":", 1)[1])
