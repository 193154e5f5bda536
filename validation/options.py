"""Command-line options every benchmark reads the same way (standard library only).

Kept apart from `validation.entry` so that option and config checks can be
imported, and tested, without torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def name_list(values: Sequence[str] | None) -> tuple[str, ...]:
    """Names from repeated and comma-separated options (`--dtype a,b --dtype c`), in order,
    without repeats; empty when none were given (the caller applies its default)."""
    names = [n.strip() for value in values or () for n in value.split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


def check_names(option: str, names: Sequence[str], known: Sequence[str]) -> None:
    """ValueError naming the option when `names` is empty or holds an unknown one."""
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"{option}: unknown {unknown}; choose from {', '.join(known)}")


def check_counts(*bounds: tuple[str, int, int]) -> None:
    """Each `(option, value, least)`: ValueError naming the option when value < least."""
    for name, value, least in bounds:
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")


def check_timeout(timeout_s: float) -> None:
    if not timeout_s > 0:
        raise ValueError(f"--timeout must be positive, got {timeout_s:g}")


def add_run_options(
    parser: argparse.ArgumentParser, timeout_s: float, timeout_help: str
) -> argparse._ArgumentGroup:
    """`--timeout` and `--json`, the options every benchmark takes the same way."""
    group = parser.add_argument_group("process group")
    group.add_argument(
        "--timeout",
        type=float,
        default=timeout_s,
        metavar="SECONDS",
        help=f"{timeout_help} (default: {timeout_s:g})",
    )
    group.add_argument(
        "--json",
        metavar="PATH",
        dest="json_path",
        help="rank 0 writes the result as JSON {name, schema_version, environ, metrics} here",
    )
    return group
