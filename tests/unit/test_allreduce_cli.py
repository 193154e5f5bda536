"""The command line of ``python -m validation.allreduce``."""

import argparse
import subprocess
import sys

import pytest

from tests.conftest import REPO
from validation.allreduce import build_parser, config_from_args, main

pytestmark = pytest.mark.unit


def test_help_documents_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{action.option_strings} has no help text"
        for flag in action.option_strings:
            assert flag in text
    for flag in ("-b", "-e", "-f", "--dtype", "-w", "-n", "-c", "--backend", "--timeout"):
        assert flag in text
    for flag in ("--json", "--repeat", "--fault-exit-rank", "--fault-hang-rank"):
        assert flag in text
    assert "testing fault handling only" in text


def test_dtypes_accept_repeats_and_comma_lists_in_order() -> None:
    args = build_parser().parse_args(["--dtype", "bfloat16,float32", "--dtype", "float16,float32"])
    assert config_from_args(args).dtypes == ("bfloat16", "float32", "float16")


def test_sizes_accept_nccl_tests_suffixes() -> None:
    config = config_from_args(build_parser().parse_args(["-b", "8", "-e", "128M", "-f", "4"]))
    assert (config.min_bytes, config.max_bytes, config.factor) == (8, 128 * 1024**2, 4.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-b", "1M", "-e", "1K"], "--max-bytes"),
        (["--dtype", "int8"], "--dtype"),
        (["--iters", "0"], "--iters"),
        (["--timeout", "0"], "--timeout"),
        (["-b", "lots"], "not a size"),
    ],
)
def test_bad_options_exit_2_before_joining_a_group(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_module_entry_point_keeps_its_name_and_exit_status() -> None:
    # Launchers start every rank as `python -m validation.allreduce`.
    run = subprocess.run(
        [sys.executable, "-m", "validation.allreduce", "-b", "1M", "-e", "1K"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert run.returncode == 2
    assert "python -m validation.allreduce: error: --max-bytes" in run.stderr
