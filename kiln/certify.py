"""Certification as a function: measure a provisioned cluster, return one record.

The Pulumi Certification resource calls a *certifier* — any function
`(cluster, context) -> mapping` — and records what it returns, normalized by
`record()` so the stack output keeps one shape whatever runs behind it:

    {"status": "pass" | "warn" | "fail" | "not-run",
     "busbwGbps": float | None,      # allreduce bus bandwidth, largest size
     "verdict": {...} | None,        # full machine-readable verdict (rules)
     "report": str | None,           # where the human-readable report is
     "message": str,
     "provisioningHash": str}        # which provisioning this certifies

`certify` below runs today's suite, the allreduce benchmark across every
compute host through the SSH launcher; baseline rules, the verdict and the
report plug in behind the same function (or as another certifier passed to
the Pulumi component) without changing the component.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.config import Cluster, Host
from kiln.inventory import access_for
from kiln.keyfiles import cluster_spec, cluster_with_key_files
from kiln.ssh import ssh_config

STATUSES = ("pass", "warn", "fail", "not-run")


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
    """Run the allreduce benchmark on every compute host; pass when every rank finished
    with correct sums, fail naming the rank and host otherwise.

    Kubernetes stacks run the same benchmark as the certification Job; reading
    its result needs the API server, so from here the record says `not-run`.
    """
    if cluster.scheduler == "kubernetes":
        return {
            "status": "not-run",
            "busbwGbps": None,
            "message": "the certification Job runs in the cluster; read its log for the result",
        }
    computes = [h for h in cluster.hosts if "compute" in h.roles]
    if not computes:
        return {"status": "not-run", "busbwGbps": None, "message": "no compute hosts to measure"}
    result = run_allreduce(cluster, computes)
    if not result.ok or result.result is None:
        failed = [r for r in result.ranks if r.returncode != 0]
        detail = failed[0].last_error_line() if failed else "no result document"
        return {"status": "fail", "busbwGbps": None, "message": f"allreduce failed: {detail}"}
    metrics = result.result["metrics"]
    largest = max(metrics["sizes"], key=lambda row: row["size_bytes"])
    wrong = sum(row.get("wrong") or 0 for row in metrics["sizes"])
    status = "fail" if wrong else "pass"
    return {
        "status": status,
        "busbwGbps": largest["busbw_gbps"],
        "message": (
            f"allreduce over {len(computes)} hosts: {largest['busbw_gbps']:.3f} GB/s busbw at "
            f"{largest['size_bytes']} B, {wrong} wrong elements"
        ),
    }


def run_allreduce(cluster: Cluster, hosts: list[Host], args: list[str] | None = None):  # noqa: ANN201
    """`validation.allreduce` on `hosts` over SSH (the validation_runtime role's /opt/kiln)."""
    from validation.launch import HostSpec, SshLauncher

    timeout = cluster.certification.timeout_seconds
    pools = {h.name: p for p in cluster.node_pools for h in p.hosts}
    specs = [
        HostSpec(
            h.name, str(h.address), slots=pools[h.name].gpu.per_node if pools[h.name].gpu else 1
        )
        for h in hosts
    ]
    targets = list(access_for(cluster).targets.values())
    with tempfile.TemporaryDirectory(prefix="kiln-certify-") as private:
        config = Path(private) / "ssh_config"
        config.write_text(ssh_config(targets))
        launcher = SshLauncher(
            ssh_config=config, wall_timeout_s=4 * timeout, after_failure_s=timeout + 30
        )
        return launcher.launch(
            "validation.allreduce",
            args or ["-b", "1M", "-e", "64M", "-f", "4", "--timeout", str(timeout)],
            specs,
        )


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


def rerun_reasons(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Why certification must run again: what it certifies changed."""
    keys = ("provisioningHash", "hosts", "settings", "job")
    return [key for key in keys if olds.get(key) != news.get(key)]


def certification_inputs(cluster: Cluster) -> dict[str, Any]:
    """The non-secret inputs of a stack's Certification resource (without the hash)."""
    return {
        "cluster": cluster_spec(cluster),
        "hosts": [h.name for h in cluster.hosts],
        "settings": cluster.certification.model_dump(mode="json", by_alias=True),
    }


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
