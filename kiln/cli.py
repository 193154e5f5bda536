"""The `kiln` command line: config checks, lab machines, provisioning and certification.

Exit codes: 0 success, 1 the work failed, 2 bad input or an unusable
environment (reported before anything changed), 3 `kiln provision --check`
found something a run would change.
"""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from kiln.config import Cluster
from kiln.errors import KilnError, UsageError
from kiln.redact import RedactingStream
from kiln.stack import ConfigError, Problem, check_key_files, load_stack, setting_notes

app = typer.Typer(
    help="Kiln: provision GPU/RDMA clusters as code, then certify them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Stack configuration.", no_args_is_help=True)
lab_app = typer.Typer(help="Real local machines for the lab provider.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(lab_app, name="lab")

# Everything the CLI prints passes through kiln.redact: a secret the run read
# (a key, the munge key, a password) is masked even where a message quotes it.
out = Console(file=RedactingStream(lambda: sys.stdout))
err = Console(file=RedactingStream(lambda: sys.stderr), soft_wrap=True)

StackOpt = Annotated[
    str, typer.Option("--stack", "-s", help="Stack name: stacks/Pulumi.<stack>.yaml")
]
StacksDirOpt = Annotated[
    Path | None, typer.Option("--stacks-dir", help="Directory of stack files (default: ./stacks)")
]

F = TypeVar("F", bound=Callable[..., None])

# `kiln --debug ...`: errors keep their traceback (still redacted).
_debug = {"on": False}


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error (secrets stay masked).")
    ] = False,
) -> None:
    """Kiln: provision GPU/RDMA clusters as code, then certify them."""
    _debug["on"] = debug


def reports_errors(func: F) -> F:
    """Turn errors into one clear line each and the right exit code; a traceback only
    with --debug, and then through the same redacting stream as everything else."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as exc:
            if _debug["on"]:
                err.print_exception()
            _report(exc)

    return wrapper  # type: ignore[return-value]


def _report(exc: Exception) -> None:
    """One line per problem on stderr, and the exit code that says what kind of failure."""
    if isinstance(exc, ConfigError):
        err.print(f"[bold red]error:[/] {exc.source}: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if isinstance(exc, UsageError):
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if isinstance(exc, KilnError):
        err.print(f"[bold red]failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    # A bug: one line, the traceback only with --debug.
    err.print(
        f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
        "(run with --debug for the traceback, and report it)",
        highlight=False,
    )
    raise typer.Exit(1) from None


def _load(stack: str, stacks_dir: Path | None, reach: bool = True) -> Cluster:
    """The stack, checked; with `reach` also that this machine can log in to its hosts."""
    cluster = load_stack(stack, stacks_dir)
    if reach:
        _require_reach(cluster, stack)
    else:
        _require(check_key_files(cluster), stack)
    return cluster


def _require_reach(cluster: Cluster, stack: str) -> None:
    """This machine can log in to every static host: usable keys, readable known_hosts."""
    _require(check_key_files(cluster, reach=True), stack)


def _require(problems: list[Problem], stack: str) -> None:
    if problems:
        raise ConfigError(f"stack {stack}", problems)


@config_app.command("check")
@reports_errors
def config_check(stack: StackOpt, stacks_dir: StacksDirOpt = None) -> None:
    """Validate a stack file; list every problem with its key path."""
    cluster = _load(stack, stacks_dir, reach=False)
    if cluster.lab_pools and sys.platform.startswith("linux") and shutil.which("ip"):
        # On the lab host, a subnet the host already uses is bad input here too.
        from kiln.lab.layout import LabLayout
        from kiln.lab.network import subnet_conflicts

        lab = cluster.lab_settings
        conflicts = subnet_conflicts(LabLayout(lab.id), lab.subnet)
        if conflicts:
            raise ConfigError(
                f"stack {stack}", [Problem("kiln:cluster.lab.subnet", c) for c in conflicts]
            )
    if cluster.certification.baseline:
        from kiln.certification import baseline

        baseline.load(cluster.certification.baseline)  # a bad baseline is bad input too
    table = Table(title=f"stack {stack}: cluster {cluster.name} is valid")
    for column in ("pool", "provider", "hosts", "gpu", "rdma"):
        table.add_column(column)
    for pool in cluster.node_pools:
        gpu = f"{pool.gpu.per_node}x {pool.gpu.model}" if pool.gpu else "-"
        table.add_row(pool.name, pool.provider, str(len(pool.hosts)), gpu, pool.rdma.fabric)
    out.print(table)
    for note in setting_notes(cluster):
        out.print(f"[yellow]note:[/] {note}", highlight=False)


def _lab(stack: str, stacks_dir: Path | None):  # noqa: ANN202 - import kept lazy
    # Imported here so `kiln config check` works on hosts without lab tooling.
    from kiln.lab.lifecycle import Lab

    return Lab(_load(stack, stacks_dir))


def _node_table(title: str, nodes) -> Table:  # noqa: ANN001
    table = Table(title=title)
    for column in ("node", "address", "roles", "netns", "running", "ssh", "systemd"):
        table.add_column(column)
    yes_no = {True: "[green]yes[/]", False: "[red]no[/]"}
    for n in nodes:
        table.add_row(
            n.name,
            n.address,
            ",".join(n.roles),
            yes_no[n.netns],
            yes_no[n.running],
            yes_no[n.ssh],
            n.systemd,
        )
    return table


@lab_app.command("up")
@reports_errors
def lab_up(
    stack: StackOpt = "lab",
    stacks_dir: StacksDirOpt = None,
    provision: Annotated[
        bool, typer.Option(help="Apply the roles (roles/site.yml) once the machines are up.")
    ] = True,
) -> None:
    """Create and boot missing lab machines, wait for SSH, then provision them (idempotent)."""
    lab = _lab(stack, stacks_dir)
    with out.status("lab up") as status:
        outcome = lab.up(report=lambda message: status.update(message))
    out.print(_node_table(f"lab {lab.settings.id} ({lab.settings.subnet})", outcome.nodes))
    if outcome.changed:
        out.print(f"{len(outcome.changes)} change(s): " + "; ".join(outcome.changes))
    else:
        out.print("lab machines already up: nothing changed")
    if not provision:
        return
    from kiln import converge_record
    from kiln.inventory import access_for

    # A no-op `lab up` should cost seconds: skip the converge when the machines
    # changed nothing and the last converge of every host still holds.
    access = access_for(lab.cluster)
    reasons = ["lab machines changed"] if outcome.changed else []
    reasons += converge_record.rerun_reasons(
        converge_record.load(lab.cluster), converge_record.current_inputs(lab.cluster, access)
    )
    if not reasons:
        out.print(
            "provisioning skipped: roles, inventory, secrets and every host's facts match the "
            "last successful converge (`kiln provision` checks the hosts themselves)"
        )
        return
    out.print("provisioning: " + "; ".join(reasons))
    _provision(lab.cluster, [h.name for h in lab.hosts])


@lab_app.command("status")
@reports_errors
def lab_status(stack: StackOpt = "lab", stacks_dir: StacksDirOpt = None) -> None:
    """Show each lab machine: namespace, process, SSH and systemd state."""
    lab = _lab(stack, stacks_dir)
    nodes = lab.status()
    out.print(_node_table(f"lab {lab.settings.id} ({lab.settings.subnet})", nodes))
    if not all(n.ssh for n in nodes):
        raise typer.Exit(1)


@lab_app.command("down")
@reports_errors
def lab_down(stack: StackOpt = "lab", stacks_dir: StacksDirOpt = None) -> None:
    """Remove the lab's machines, namespaces, bridge, NAT rules and mounts (idempotent)."""
    lab = _lab(stack, stacks_dir)
    lab.preflight_host()
    with out.status("lab down") as status:
        outcome = lab.down(report=lambda message: status.update(message))
    if outcome.changed:
        out.print(f"lab {lab.settings.id} removed: " + "; ".join(outcome.changes))
    else:
        out.print(f"lab {lab.settings.id}: nothing to remove")


@app.command("provision")
@reports_errors
def provision_cmd(
    stack: StackOpt,
    stacks_dir: StacksDirOpt = None,
    limit: Annotated[
        str | None, typer.Option("--limit", help="Comma-separated host names (default: all)")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing; report per host and task what a run would change. "
            "Exit 0: nothing would change, 3: something would.",
        ),
    ] = False,
    diff: Annotated[
        bool, typer.Option("--diff", help="Show what each changed file would look like.")
    ] = False,
    rotate_munge_key: Annotated[
        bool,
        typer.Option(
            "--rotate-munge-key",
            help="Make a new munge key for the cluster (the old one is kept beside it) "
            "and install it on every host.",
        ),
    ] = False,
    replace_munge_key: Annotated[
        bool,
        typer.Option(
            "--replace-munge-key",
            help="Install this machine's munge key on hosts holding another one "
            "(finishes a rotation that did not reach every host).",
        ),
    ] = False,
) -> None:
    """Apply the Ansible roles (roles/site.yml) to the stack's hosts."""
    hosts = [h.strip() for h in limit.split(",") if h.strip()] if limit else None
    cluster = _load(stack, stacks_dir)
    extra_vars = _munge_key_vars(
        cluster, hosts, check=check, rotate=rotate_munge_key, replace=replace_munge_key
    )
    _provision(cluster, hosts, check=check, diff=diff, extra_vars=extra_vars)


def _munge_key_vars(
    cluster: Cluster, hosts: list[str] | None, *, check: bool, rotate: bool, replace: bool
) -> dict[str, bool] | None:
    """The munge role replaces a key it installed only when told to (`munge_rotate_key`):
    a re-run from a machine that holds another key must not split the cluster. Rotation
    makes the new key here first, so every refusal comes before that."""
    if not (rotate or replace):
        return None
    flag = "--rotate-munge-key" if rotate else "--replace-munge-key"
    if rotate and replace:
        raise UsageError("--rotate-munge-key already installs the key: drop --replace-munge-key")
    if cluster.scheduler != "slurm":
        raise UsageError(f"{flag}: stack {cluster.name} runs no Slurm, so it has no munge key")
    if rotate and check:
        raise UsageError("--rotate-munge-key makes a new key: it cannot run with --check")
    if rotate and hosts is not None:
        # A key on some hosts only would stop Slurm between them and the others.
        raise UsageError("--rotate-munge-key goes to every host: drop --limit")
    if rotate:
        from kiln import secrets

        secrets.rotate_munge_key(cluster.name)
        out.print(
            f"new munge key for cluster {cluster.name} (the old one is kept beside it in "
            f"{secrets.secrets_dir(cluster.name)}); installing it on every host",
            markup=False,
            highlight=False,
        )
    return {"munge_rotate_key": True}


# `kiln provision --check` found something to change: a drift alarm in CI,
# told apart from 1 (the run failed) and 2 (bad input).
EXIT_WOULD_CHANGE = 3


def _provision(
    cluster: Cluster,
    hosts: list[str] | None,
    *,
    check: bool = False,
    diff: bool = False,
    extra_vars: dict[str, bool] | None = None,
) -> None:
    """Run the roles with a progress line; exit 1 unless every targeted host succeeded."""
    from kiln.converge_record import provision_and_record

    with out.status("checking" if check else "provisioning") as status:
        result = provision_and_record(
            cluster,
            hosts,
            on_event=lambda message: status.update(message),
            check=check,
            diff=diff,
            extra_vars=extra_vars,
        )
    out.print(provision_table(result))
    for text in result.diffs:
        out.print(text, markup=False, highlight=False)
    if check:
        for name, tasks in result.changes.items():
            out.print(f"{name}: would change: " + "; ".join(tasks), markup=False, highlight=False)
    for error in result.errors:
        err.print(f"  {error}", markup=False, highlight=False)
    if not result.succeeded:
        # The hosts that did not finish, by name and why; the others ran to the end
        # unless the failure limit stopped the run (said above).
        failures = result.failures()
        if failures:
            done = len(result.hosts) - len(failures)
            others = f"; the other {done} finished" if done and not result.stopped else ""
            err.print(
                f"[bold red]failed:[/] {len(failures)} of {len(result.hosts)} host(s) did not "
                f"finish{others} (a run once they are back converges them):",
                highlight=False,
            )
            for line in failures:
                err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(1)
    if check and result.changed:
        raise typer.Exit(EXIT_WOULD_CHANGE)


def provision_table(result) -> Table:  # noqa: ANN001
    """Per-host recap: ok / changed / failed / unreachable."""
    what = "change(s) to make" if result.check else "change(s)"
    table = Table(title=f"{'check' if result.check else 'provisioning'}: {result.changed} {what}")
    for column in ("host", "status", "ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(column)
    colour = {
        "ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red", "not run": "red"
    }  # fmt: skip
    for name, h in result.hosts.items():
        table.add_row(
            name,
            f"[{colour[h.status]}]{h.status}[/]",
            str(h.ok),
            str(h.changed),
            str(h.failed),
            str(h.unreachable),
            str(h.skipped),
        )
    return table


# -- certification -----------------------------------------------------------------

baseline_app = typer.Typer(help="Certification baselines.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")

_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "error": "red"}
# Beyond this many rule results, the table shows only those that did not pass.
_TABLE_ALL_ROWS = 40


@app.command("certify")
@reports_errors
def certify_cmd(
    stack: StackOpt,
    stacks_dir: StacksDirOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Report directory (default: <state>/certifications/...)"),
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="quick or full (default: the stack's)")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only", help="Comma-separated phases: preflight, allreduce, gemm, storage, models"
        ),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="An earlier report directory: call out regressions"),
    ] = None,
    publish: Annotated[
        bool, typer.Option(help="Copy kiln.prom into node_exporter's textfile directory")
    ] = True,
) -> None:
    """Certify a provisioned cluster: preflight, allreduce (and with --profile full GEMM,
    shared storage and the training-scaling ladder), rules, isolation, reports.

    Exit 0 pass or warn, 1 fail (a rule failed, a measurement missing), 2 could not run.
    """
    from kiln.certification.run import Request, certify_stack
    from kiln.certify import default_out_dir

    # Kubernetes stacks are refused (certify_stack) before the SSH keys they do not use.
    cluster = _load(stack, stacks_dir, reach=False)
    if cluster.scheduler != "kubernetes":
        _require_reach(cluster, stack)
    out_path = out_dir or default_out_dir(cluster.name)
    phases = tuple(p.strip() for p in only.split(",") if p.strip()) if only else None
    request = Request(stack, out_path, profile, phases, compare, publish=publish)
    with out.status("certify") as status:
        result = certify_stack(cluster, request, progress=lambda m: status.update(m))
    out.print(verdict_table(result))
    from kiln.certification.report import scaling_lines

    for line in scaling_lines(result):
        out.print(f"scaling: {line}", highlight=False)
    for phase in result.phases:
        if phase.status == "failed":
            err.print(f"[yellow]warning:[/] {phase.name}: {phase.message}", highlight=False)
    style = _STATUS_STYLE[result.status]
    out.print(f"[bold {style}]{result.status.upper()}[/]: {result.reason}", highlight=False)
    out.print(f"report: {out_path / 'report.html'}", highlight=False, soft_wrap=True)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def verdict_table(result) -> Table:  # noqa: ANN001
    """Rule results (all of them, or those not passing on a large cluster) and culprits."""
    rows = result.rules
    hidden = 0
    if len(rows) > _TABLE_ALL_ROWS:
        shown = [r for r in rows if r.status != "pass"]
        hidden = len(rows) - len(shown)
        rows = shown
    title = f"certification of {result.cluster} ({result.profile}, {result.baseline.get('class')})"
    table = Table(
        title=title, caption=f"{hidden} passing rule result(s) not shown" if hidden else None
    )
    for column in ("rule", "subject", "status", "value", "threshold", "fault"):
        table.add_column(column, overflow="fold")
    for r in rows:
        value = r.value
        if isinstance(value, float):
            value = f"{value:.4g}"
        if isinstance(value, dict):  # homogeneity: the facts compared; the reason says which
            value = "as its pool" if r.status == "pass" else "differs (see report)"
        shown_value = "missing" if value is None else str(value)
        table.add_row(
            r.rule,
            r.subject,
            f"[{_STATUS_STYLE[r.status]}]{r.status}[/]",
            f"{shown_value} {r.unit}".strip(),
            r.threshold,
            r.fault_code or "",
        )
    return table


@baseline_app.command("generate")
@reports_errors
def baseline_generate(
    sources: Annotated[
        list[Path], typer.Option("--from", help="Report directories (or result.json files)")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="Baseline file to write")],
    extends: Annotated[
        str, typer.Option(help="Baseline class whose rules the new one refines")
    ] = "lab-cpu",
    hardware_class: Annotated[
        str | None, typer.Option("--class", help="Class name of the new baseline")
    ] = None,
    min_tolerance: Annotated[
        float,
        typer.Option(help="Smallest fail fraction below the expected value (noisy fabrics: more)"),
    ] = 0.15,
) -> None:
    """A baseline from a fleet of results, robust to outliers (median / MAD, iterated)."""
    from kiln.certification.fleet import generate, read_results, render

    results = read_results(sources)
    name = hardware_class or out_file.stem
    document, notes = generate(results, extends, name, min_tolerance)
    from kiln.certification.report import write_atomic

    if out_file.exists() and out_file.is_dir():
        raise UsageError(f"--out {out_file} is a directory; give a file name")
    write_atomic(out_file, render(document, results))
    for note in notes:
        out.print(note, highlight=False)
    out.print(f"baseline {name} written to {out_file}", highlight=False)
