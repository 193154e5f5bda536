"""One certification run: preflight, benchmarks, rules, isolation, verdict, reports.

`certify_stack` is the one function behind `kiln certify` and the Pulumi
Certification resource. The result is written to the report directory after
every phase, so a run that stops early (a host unreachable, a launcher error,
a node that died) still leaves what it measured, with status `error` (exit 2,
never a pass).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kiln import host_trust, role_defaults
from kiln.certification import baseline as baselines
from kiln.certification import benchmarks
from kiln.certification import isolation as isolating
from kiln.certification import preflight as pre
from kiln.certification.judge import isolation_trigger, judge, now
from kiln.certification.launch import CouldNotRun, GroupOutcome, GroupRunner, allreduce_args
from kiln.certification.record import record_allreduce
from kiln.certification.report import check_writable, write_atomic, write_reports
from kiln.certification.rules import Context, evaluate
from kiln.certification.verdict import (
    CertificationResult,
    PhaseRecord,
    RuleResult,
    finite_number,
)
from kiln.config import Cluster
from kiln.errors import UsageError
from kiln.inventory import Access, access_for

#: Phases in run order.
PHASES = ("preflight", "allreduce", *benchmarks.PHASES)
PROFILES: dict[str, tuple[str, ...]] = {
    # quick: minutes; the first configured dtype only.
    "quick": ("preflight", "allreduce"),
    # full: every configured dtype, then GEMM, shared storage and the scaling ladder.
    "full": PHASES,
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    """What to certify and where to write it."""

    stack: str
    out_dir: Path
    profile: str | None = None
    only: tuple[str, ...] | None = None
    compare: Path | None = None
    provisioning_hash: str | None = None
    publish: bool = True
    """Copy kiln.prom into node_exporter's textfile directory on every host."""


def phases_for(profile: str, only: Sequence[str] | None) -> tuple[str, ...]:
    """The phases to run; UsageError naming an unknown phase."""
    if profile not in PROFILES:
        raise UsageError(f"--profile {profile!r}: choose {' or '.join(PROFILES)}")
    if not only:
        return PROFILES[profile]
    unknown = [p for p in only if p not in PHASES]
    if unknown:
        raise UsageError(
            f"--only: unknown phase {', '.join(unknown)}; available: {', '.join(PHASES)}"
        )
    return tuple(p for p in PHASES if p in only)


def features(cluster: Cluster) -> frozenset[str]:
    """What the stack has, for rules' `requires`."""
    have = set()
    if cluster.scheduler == "slurm":
        have.add("slurm")
    if cluster.storage.kind != "none":
        have.add("storage")
    if cluster.monitoring.prometheus and cluster.monitoring.node_exporter:
        have.add("prometheus")
    if any(p.gpu for p in cluster.node_pools):
        have.add("gpu")
    if any(p.gpu and p.gpu.per_node > 1 for p in cluster.node_pools):
        have.add("multi-gpu")
    if any(p.rdma.fabric != "none" for p in cluster.node_pools):
        have.add("rdma")
    if pre.dcgm_diag_wanted(cluster):
        have.add("dcgm")
    return frozenset(have)


class Certification:
    """State of one run; each phase adds to `result` and saves it."""

    def __init__(
        self, cluster: Cluster, request: Request, access: Access | None, progress: Progress
    ) -> None:
        """Checks the request (baseline, phases, --compare) before any host is reached."""
        self.cluster = cluster
        self.request = request
        self.progress = progress
        self.baseline, info = baselines.load(_baseline_name(cluster))
        self.profile = request.profile or cluster.certification.profile
        self.phases = phases_for(self.profile, request.only)
        self.computes = [h.name for h in cluster.hosts if "compute" in h.roles]
        if not self.computes:
            raise UsageError("the stack has no compute hosts to certify (roles: [compute])")
        self.out = request.out_dir
        self.evidence = self.out / "evidence"
        self.result = CertificationResult(
            stack=request.stack,
            cluster=cluster.name,
            profile=self.profile,
            provisioning_hash=request.provisioning_hash,
            baseline=info,
            started_at=now(),
            hosts=list(self.computes),
        )
        self.previous = _read_previous(request.compare) if request.compare else None
        # A run that cannot be recorded is refused before it measures anything.
        check_writable(self.out)
        # Last: reaching the hosts (a lab's keys, a static pool's key files) comes
        # after everything that can be refused without them.
        self.access = access or access_for(cluster)
        stopped = host_trust.vet(cluster, self.access.targets, progress)
        if stopped:
            raise UsageError("host keys refused: " + "; ".join(stopped[n] for n in sorted(stopped)))

    # -- bookkeeping ---------------------------------------------------------------

    def save(self) -> None:
        write_reports(self.result, self.out)

    def phase(self, name: str, started: float, status: str, message: str, evidence=()) -> None:  # noqa: ANN001
        self.result.phases.append(
            PhaseRecord(name, status, round(time.monotonic() - started, 2), message, list(evidence))  # type: ignore[arg-type]
        )
        self.save()

    def context(self) -> Context:
        hosts = [h.name for h in self.cluster.hosts]
        pools = self.cluster.node_pools
        gpu = [h.name for p in pools if p.gpu for h in p.hosts if "compute" in h.roles]
        rdma = [h.name for p in pools if p.rdma.fabric != "none" for h in p.hosts]
        return Context(
            subjects={
                "cluster": ["cluster"],
                "hosts": hosts,
                "computes": self.computes,
                "gpu-computes": gpu,
                "rdma-hosts": rdma,
            },
            pool_of={h.name: p.name for p in self.cluster.node_pools for h in p.hosts},
            features=features(self.cluster),
            phases=frozenset(self.phases),
            facts=self.result.facts,
        )

    # -- phases --------------------------------------------------------------------

    def preflight_phase(self) -> None:
        started = time.monotonic()
        self.progress("preflight: facts from every host")
        timeout = float(min(60, self.cluster.certification.timeout_seconds))
        command = pre.state_command(self.cluster, role_defaults.validation_venv())
        gathered = pre.gather_all(self.access.targets, command, timeout)
        self.result.facts = {n: g.facts for n, g in gathered.items() if g.facts is not None}
        slurm: dict[str, str] = {}
        targets: dict[str, str] = {}
        controllers = [h.name for h in self.cluster.hosts if "controller" in h.roles]
        notes = []
        if controllers and controllers[0] in self.result.facts:
            slurm, targets, error = pre.controller_views(
                self.access.targets[controllers[0]],
                self.cluster,
                role_defaults.prometheus_port(),
                timeout,
            )
            if error:
                notes.append(error)
        for name, facts in self.result.facts.items():
            facts["slurm_state"] = slurm.get(name)
            facts["prometheus_target"] = targets.get(name)
        self.result.measurements += pre.measurements(
            self.cluster, self.result.facts, slurm, targets
        )
        write_atomic(
            self.evidence / "preflight.json",
            json.dumps(
                {
                    "facts": self.result.facts,
                    "errors": {n: g.error for n, g in gathered.items() if g.error},
                    "notes": notes,
                },
                indent=2,
                default=str,
            )
            + "\n",
        )
        unreachable = [g.error for g in gathered.values() if g.error]
        if unreachable:
            message = f"unreachable at preflight: {'; '.join(unreachable)}"
            self.phase("preflight", started, "error", message, ["evidence/preflight.json"])
            raise CouldNotRun(message)
        self.phase(
            "preflight",
            started,
            "ok",
            f"{len(gathered)} host(s)" + (f"; {'; '.join(notes)}" if notes else ""),
            ["evidence/preflight.json"],
        )

    def _dtypes(self) -> list[str]:
        dtypes = list(self.cluster.certification.allreduce.dtypes)
        return dtypes if self.profile == "full" else dtypes[:1]

    def _allreduce(self, hosts: Sequence[str]) -> GroupOutcome:
        settings = self.cluster.certification
        args = allreduce_args(settings.allreduce, self._dtypes(), settings.timeout_seconds)
        with GroupRunner(self.cluster, self.access) as runner:
            return runner.run("validation.allreduce", args, hosts)

    def _record_run(self, run_id: str, outcome: GroupOutcome, subject: str) -> float | None:
        return record_allreduce(self.result, self.evidence, run_id, outcome, subject)

    def allreduce_phase(self) -> None:
        started = time.monotonic()
        self.progress(f"allreduce: {len(self.computes)} hosts")
        outcome = self._allreduce(self.computes)
        self._record_run("allreduce-cluster", outcome, "cluster")
        if outcome.doc is None:
            self.phase("allreduce", started, "error", outcome.error or "no result")
            raise CouldNotRun(outcome.error or "allreduce produced no result")
        multi = [
            h.name
            for p in self.cluster.node_pools
            if p.gpu and p.gpu.per_node > 1
            for h in p.hosts
            if "compute" in h.roles
        ]
        if multi:
            self.progress(f"allreduce: single-node runs on {len(multi)} GPU hosts")
            with ThreadPoolExecutor(max_workers=min(32, len(multi))) as pool:
                outcomes = list(pool.map(lambda h: self._allreduce([h]), multi))
            for host, node in zip(multi, outcomes, strict=True):
                value = self._record_run(f"allreduce-node-{host}", node, host)
                self.result.measurements.append(
                    {
                        "name": "allreduce.node_busbw_gbps",
                        "subject": host,
                        "value": value,
                        "unit": "GB/s",
                        "reason": node.error,
                        "evidence": f"evidence/allreduce-node-{host}.json",
                    }
                )
        self.phase("allreduce", started, "ok", f"{outcome.launcher}, {outcome.wall_s:.1f} s")

    def isolation_phase(self, trigger: RuleResult) -> None:
        """Find who makes the cluster-wide busbw fail, with the fewest runs."""
        started = time.monotonic()
        threshold = trigger.fail_at
        if threshold is None:
            return
        referee = self._referee()
        parallel = self.cluster.certification.parallel_isolation
        if parallel is None:
            parallel = not self.cluster.lab_pools
        rounds = [0]

        def run_round(groups: list[tuple[str, ...]]) -> list[float | None]:
            # Evidence files carry isolation's own run ids: iso-<round>-<k>, k from 1.
            rounds[0] += 1
            self.progress(f"isolation: {' | '.join('+'.join(g) for g in groups)}")
            workers = len(groups) if parallel else 1
            with ThreadPoolExecutor(max_workers=max(1, min(32, workers))) as pool:
                outcomes = list(pool.map(self._allreduce, groups))
            values = [
                self._record_run(f"iso-{rounds[0]}-{k}", outcome, "+".join(group))
                for k, (group, outcome) in enumerate(zip(groups, outcomes, strict=True), 1)
            ]
            self.save()
            return values

        found = isolating.isolate(
            self.computes,
            run_round,
            threshold,
            referees=[referee] if referee else [],
            parallel=parallel,
            trigger=f"{trigger.rule} ({trigger.subject})",
        )
        self.result.isolation = replace(
            found, runs=[replace(r, evidence=f"evidence/{r.id}.json") for r in found.runs]
        )
        self.result.culprits = list(found.culprits)
        self.phase(
            "isolation",
            started,
            "ok",
            f"{len(found.runs)} run(s) in {found.rounds} round(s); "
            + (", ".join(f"{c.kind} {'+'.join(c.hosts)}" for c in found.culprits) or found.note),
        )

    def _referee(self) -> str | None:
        chosen = self.cluster.certification.referee
        if chosen:
            return chosen
        spare = [h.name for h in self.cluster.hosts if "compute" not in h.roles]
        controllers = [n for n in spare if "controller" in self._roles(n)]
        return (controllers or spare or [None])[0]

    def _roles(self, name: str) -> list[str]:
        return next(h.roles for h in self.cluster.hosts if h.name == name)

    def run(self) -> CertificationResult:
        error = None
        try:
            if "preflight" in self.phases:
                self.preflight_phase()
            if "allreduce" in self.phases:
                self.allreduce_phase()
                rules, _ = evaluate(self.baseline, self.result.measurements, self.context())
                trigger = isolation_trigger(self.baseline, rules)
                if trigger is not None and len(self.computes) >= 2:
                    self.isolation_phase(trigger)
            for name in benchmarks.PHASES:
                if name in self.phases:
                    benchmarks.RUNNERS[name](self)
        except CouldNotRun as exc:
            error = str(exc)
        compared = str(self.request.compare) if self.request.compare else None
        judge(self.result, self.baseline, self.context(), error, self.previous, compared)
        self.save()
        return self.result


def _baseline_name(cluster: Cluster) -> str:
    name = cluster.certification.baseline
    if not name:
        raise UsageError(
            "kiln:cluster.certification.baseline is not set: name a baseline class "
            "(stacks/baselines/<class>.yaml) or a file"
        )
    return name


def _read_previous(path: Path) -> CertificationResult:
    file = path / "result.json" if path.is_dir() else path
    try:
        return CertificationResult.from_dict(json.loads(file.read_text()))
    except FileNotFoundError:
        raise UsageError(f"--compare {path}: no result.json there") from None
    except ValueError as exc:
        raise UsageError(f"--compare {path}: {exc}") from None


def certify_stack(
    cluster: Cluster,
    request: Request,
    access: Access | None = None,
    progress: Progress = lambda _: None,
) -> CertificationResult:
    """Certify `cluster`; UsageError (exit 2) before anything runs for bad input."""
    if cluster.scheduler == "kubernetes":
        raise UsageError(
            "kiln certify does not read Kubernetes Job results yet: on Kubernetes stacks the "
            "certification Job runs in the cluster (see its log)"
        )
    run = Certification(cluster, request, access, progress)
    result = run.run()
    if request.publish and cluster.monitoring.node_exporter:
        from kiln.certification.publish import publish_textfile

        started = time.monotonic()
        progress("publishing kiln.prom to node_exporter on every host")
        problems = publish_textfile(run.access, request.out_dir / "kiln.prom")
        # Not a verdict: the cluster measured what it measured; dashboards just miss it.
        status = "failed" if problems else "ok"
        message = "; ".join(problems) or f"kiln.prom on {len(run.access.targets)} host(s)"
        run.phase("publish", started, status, message)
    return result


def headline(result: CertificationResult) -> float | None:
    """The cluster-wide headline busbw of a result, if measured."""
    numbers = [
        v
        for m in result.measurements
        if m["name"] == "allreduce.busbw_gbps" and m["subject"] == "cluster"
        if (v := finite_number(m["value"])) is not None
    ]
    return statistics.median(numbers) if numbers else None


def summary(result: CertificationResult) -> dict[str, Any]:
    """What the Pulumi stack exports: status, failed rules, culprits, report path."""
    return {
        "status": result.status,
        "reason": result.reason,
        "failedRules": [
            {"rule": r.rule, "subject": r.subject, "faultCode": r.fault_code}
            for r in result.failed_rules
        ],
        "culprits": [
            {"kind": c.kind, "hosts": list(c.hosts), "faultCode": c.fault_code}
            for c in result.culprits
        ],
    }
