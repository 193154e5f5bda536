"""Certification as a function: measure a provisioned cluster, return one record.

The Pulumi Certification resource calls a *certifier* — any function
`(cluster, context) -> mapping` — and records what it returns, normalized by
`record()` so the stack output keeps one shape whatever runs behind it:

    {"status": "pass" | "warn" | "fail" | "error" | "not-run",
     "busbwGbps": float | None,      # allreduce bus bandwidth, largest size
     "verdict": {...} | None,        # status, reason, failedRules, culprits
     "report": str | None,           # where the human-readable report is
     "message": str,
     "provisioningHash": str}        # which provisioning this certifies

`certify` below is `kiln certify` (kiln.certification.run.certify_stack):
preflight, allreduce, baseline rules, isolation of the bad node or link, and
the reports; another certifier can be passed to the Pulumi component without
changing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.cluster_spec import cluster_spec
from kiln.config import Cluster
from kiln.keyfiles import cluster_with_key_files

#: `error`: the run could not finish (a host unreachable, a launcher error): never a pass.
STATUSES = ("pass", "warn", "fail", "error", "not-run")


@dataclass(frozen=True)
class CertifyContext:
    """What a certifier gets besides the config: how to reach the cluster, what it certifies."""

    provisioning_hash: str
    """Hash of the provisioning this run certifies (recorded with the result)."""
    ssh_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Static pools' SSH private keys by pool name (secrets)."""
    kubeconfig: str | None = field(default=None, repr=False)
    """Kubernetes stacks: the kubeconfig (a secret)."""
    job: Mapping[str, str] | None = None
    """Kubernetes stacks: `{namespace, name}` of the certification Job deployed for this run."""


Certifier = Callable[[Cluster, CertifyContext], Mapping[str, Any]]


def certify(cluster: Cluster, context: CertifyContext) -> dict[str, Any]:
    """`kiln certify`'s run (quick profile unless the stack says otherwise), as a record.

    The reports go to `<state>/certifications/<cluster>/<time>/`; the record
    carries the verdict (status, failed rules, culprits) and that path.
    Kubernetes stacks run the suite as the certification Job; reading its
    result needs the API server, so from here the record says `not-run`.
    """
    from kiln.certification.run import Request, certify_stack, headline, summary

    if cluster.scheduler == "kubernetes":
        return {
            "status": "not-run",
            "busbwGbps": None,
            "message": "the certification Job runs in the cluster; read its log for the result",
        }
    out = default_out_dir(cluster.name)
    result = certify_stack(
        cluster,
        Request(stack=cluster.name, out_dir=out, provisioning_hash=context.provisioning_hash),
    )
    busbw = headline(result) if result.status in ("pass", "warn") else None
    return {
        "status": result.status,
        "busbwGbps": busbw,
        "verdict": summary(result),
        "report": str(out / "report.html"),
        "message": result.reason,
    }


def default_out_dir(cluster_name: str) -> Path:
    """Where a certification run keeps its reports when no --out is given."""
    from datetime import UTC, datetime

    from kiln.paths import state_root

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return state_root() / "certifications" / cluster_name / stamp


def record(raw: Mapping[str, Any], provisioning_hash: str) -> dict[str, Any]:
    """A certifier's result in the one shape the stack exports; ValueError if malformed."""
    status = raw.get("status")
    if status not in STATUSES:
        raise ValueError(f"certifier returned status {status!r}; expected one of {STATUSES}")
    busbw = raw.get("busbwGbps")
    if busbw is not None:
        if (
            isinstance(busbw, bool)
            or not isinstance(busbw, int | float)
            or not math.isfinite(busbw)
        ):
            raise ValueError(f"certifier returned busbwGbps={busbw!r}; expected a finite number")
        if busbw < 0:
            raise ValueError(f"certifier returned a negative busbwGbps ({busbw})")
        busbw = float(busbw)
    if status in ("pass", "warn") and busbw is None:
        raise ValueError(f"status {status!r} needs the measured busbwGbps")
    verdict = raw.get("verdict")
    if verdict is not None and not isinstance(verdict, Mapping):
        raise ValueError("certifier returned a verdict that is not a mapping")
    return {
        "status": status,
        "busbwGbps": busbw,
        "verdict": dict(verdict) if verdict is not None else None,
        "report": raw.get("report"),
        "message": str(raw.get("message") or ""),
        "provisioningHash": provisioning_hash,
    }


def run(
    cluster: Cluster, context: CertifyContext, certifier: Certifier = certify
) -> dict[str, Any]:
    """Call `certifier` and normalize what it returns."""
    return record(certifier(cluster, context), context.provisioning_hash)


def recertify_reasons(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Why certification must run again: what it certifies changed."""
    keys = ("provisioningHash", "hosts", "settings", "baselineDigest", "job")
    return [key for key in keys if olds.get(key) != news.get(key)]


def certification_inputs(cluster: Cluster) -> dict[str, Any]:
    """The non-secret inputs of a stack's Certification resource (without the hash)."""
    inputs = {
        "cluster": cluster_spec(cluster),
        "hosts": [h.name for h in cluster.hosts],
        "settings": cluster.certification.model_dump(mode="json", by_alias=True),
    }
    if cluster.certification.baseline:
        from kiln.certification.baseline import load

        # New thresholds certify again, though the stack's settings did not change.
        inputs["baselineDigest"] = load(cluster.certification.baseline)[1]["digest"]
    return inputs


def run_from_props(props: Mapping[str, Any], certifier: Certifier = certify) -> dict[str, Any]:
    """Certify from a Certification resource's inputs; its recorded state (no secrets)."""
    secrets = props.get("secrets") or {}
    keys = secrets.get("sshKeys") or {}
    with cluster_with_key_files(props["cluster"], keys) as cluster:
        context = CertifyContext(
            provisioning_hash=props["provisioningHash"],
            ssh_keys=keys,
            kubeconfig=secrets.get("kubeconfig"),
            job=props.get("job"),
        )
        result = run(cluster, context, certifier)
    state = {key: value for key, value in props.items() if key != "secrets"}
    return {**state, "record": result}
