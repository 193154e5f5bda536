"""StageArgs: the inputs of a component that applies one stage of site.yml after the node roles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from components.kube import KubernetesTarget
from components.providers import Playbook
from components.provisioning import warn_missing
from kiln.config import Cluster
from kiln.drift import playbook_inputs
from kiln.plays import Stage
from kiln.provision import ROLES_DIR


@dataclass
class StageArgs:
    """Inputs of SharedStorage and Monitoring: one stage of roles, and their Kubernetes side."""

    cluster: Cluster
    """The stack config."""
    depends_on: Sequence[pulumi.Resource]
    """What the stage's roles run after: the node roles (`kiln.deployment` plans the edges)."""
    facts_digest: pulumi.Input[str]
    """Hash of every host's facts (a reinstalled host gets the stage again)."""
    secrets: pulumi.Input[Mapping[str, Any]]
    """Playbook secrets (SSH keys), a Pulumi secret."""
    kubernetes: KubernetesTarget | None = None
    """Kubernetes stacks: the provider and Kiln namespace for the stage's resources."""
    roles_dir: Path = ROLES_DIR
    """The roles tree hashed and applied."""


def stage_playbook(parent: pulumi.Resource, name: str, args: StageArgs, stage: Stage) -> Playbook:
    """A Playbook running `stage`'s roles on every host (storage, monitoring)."""
    inputs = playbook_inputs(args.cluster, stage, args.roles_dir)
    warn_missing(name, inputs)
    if not inputs["plays"]:
        pulumi.log.warn(
            f"{name}: roles/site.yml applies no {stage} role yet; this step runs nothing "
            "until one is added (the content hash will then show it as drift)"
        )
    opts = pulumi.ResourceOptions(parent=parent, depends_on=list(args.depends_on))
    return Playbook(
        name, {**inputs, "factsDigest": args.facts_digest, "secrets": args.secrets}, opts
    )
