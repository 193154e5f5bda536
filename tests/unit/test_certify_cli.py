"""`kiln certify` and `kiln baseline generate` at the command line: bad input is exit 2 with
one clear line, before any host is reached."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, kiln_cli, write_stack

pytestmark = pytest.mark.unit


def _no_traceback(run) -> None:
    assert "Traceback" not in run.stderr + run.stdout


def test_a_kubernetes_stack_is_exit_2_saying_why():
    run = kiln_cli("certify", "--stack", "prod", "--stacks-dir", str(REPO / "stacks"))
    assert run.returncode == 2 and "Kubernetes" in run.stderr
    _no_traceback(run)


def test_an_unknown_phase_is_refused_before_the_lab_is_touched(tmp_path):
    # The lab stack's machines are not up here: the refusal must come first.
    run = kiln_cli("certify", "--stack", "lab", "--only", "nbody", "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and "unknown phase nbody" in run.stderr
    assert "available: preflight, allreduce" in run.stderr
    assert not (tmp_path / "o").exists()
    _no_traceback(run)


def test_a_stack_naming_a_missing_baseline_fails_config_check(tmp_path):
    write_stack(
        tmp_path,
        "x",
        {
            "name": "x",
            "nodePools": [{"name": "lab", "provider": "lab", "hosts": [{"name": "n1"}]}],
            "certification": {"baseline": "h900-imaginary"},
        },
    )
    run = kiln_cli("config", "check", "--stack", "x", "--stacks-dir", str(tmp_path))
    assert run.returncode == 2 and "h900-imaginary" in run.stderr and "lab-cpu" in run.stderr
    _no_traceback(run)


def test_baseline_generate_without_results_is_exit_2(tmp_path):
    run = kiln_cli(
        "baseline",
        "generate",
        "--from",
        str(tmp_path / "nothing"),
        "--out",
        str(tmp_path / "b.yaml"),
    )
    assert run.returncode == 2 and "no result.json" in run.stderr
    assert not (tmp_path / "b.yaml").exists()
    _no_traceback(run)
