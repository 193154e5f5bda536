"""Certification: measure the cluster once it is provisioned, and keep the verdict in the stack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.providers import CertificationRun
from kiln import certify
from kiln.config import Cluster


@dataclass
class CertificationArgs:
    """Inputs of Certification."""

    cluster: Cluster
    """The stack config (`certification` settings, hosts)."""
    provisioning_hash: pulumi.Input[str]
    """What is certified; a different hash runs certification again."""
    depends_on: Sequence[pulumi.Resource]
    """Provisioning and everything else that must be in place (storage, monitoring, platform)."""
    secrets: pulumi.Input[Mapping[str, Any]] = field(default_factory=dict)
    """SSH keys (and on Kubernetes the kubeconfig) for the certifier, a Pulumi secret."""
    job: pulumi.Input[Mapping[str, str]] | None = None
    """Kubernetes stacks: the certification Job whose results are recorded."""
    certifier: certify.Certifier = certify.certify
    """`(cluster, context) -> record`; the validation suite plugs in here."""


class Certification(pulumi.ComponentResource):
    """A certification record: status, measured allreduce bus bandwidth, verdict, report."""

    record: pulumi.Output[dict[str, Any]]
    """The certifier's result, normalized by `kiln.certify.record`."""
    busbw_gbps: pulumi.Output[float | None]
    """Allreduce bus bandwidth in GB/s at the largest size (None until measured)."""
    status: pulumi.Output[str]
    """pass / warn / fail / not-run."""

    def __init__(
        self, name: str, args: CertificationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:certification:Certification", name, None, opts)
        if not args.depends_on:
            raise ValueError("Certification must run after provisioning: give depends_on")
        props = {
            **certify.certification_inputs(args.cluster),
            "provisioningHash": args.provisioning_hash,
            "job": args.job,
            "secrets": pulumi.Output.secret(args.secrets),
        }
        self.run = CertificationRun(
            f"{name}-run",
            props,
            args.certifier,
            pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.record = self.run.record
        self.busbw_gbps = self.record.apply(lambda r: (r or {}).get("busbwGbps"))
        self.status = self.record.apply(lambda r: (r or {}).get("status", "not-run"))
        self.register_outputs(
            {"record": self.record, "busbwGbps": self.busbw_gbps, "status": self.status}
        )
