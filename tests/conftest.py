"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import parallel

REPO = Path(__file__).resolve().parent.parent


def write_stack(directory: Path, name: str, cluster: dict) -> Path:
    """Write `Pulumi.<name>.yaml` holding `kiln:cluster` into `directory` (and, for a
    Kubernetes stack, a placeholder `kiln:kubeconfig` Pulumi secret: every front door
    requires one, and no test here talks to a Kubernetes API)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"Pulumi.{name}.yaml"
    config: dict = {"kiln:cluster": cluster}
    if cluster.get("scheduler") == "kubernetes":
        config["kiln:kubeconfig"] = {"secure": "v1:placeholder"}
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


def kiln_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `kiln` command line, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    parallel.name_the_run(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    parallel.remove_locks(config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    parallel.check_and_order(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    return parallel.make_scheduler(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    # Setup, call and teardown: a module's lab boots and goes inside its first and last test.
    with parallel.turn(item, nextitem):
        yield
