"""What `pulumi up` deploys for a stack, in which order: the stages and their edges, as plain data.

The Cluster component (components/cluster.py) builds one component per
stage of this plan, in its order, each depending on the stages it names
`after`. Here the plan is decided and tested without the Pulumi engine;
there the plan only becomes resources.

- `node`: the node roles of every pool (`Provisioning`), after the pools' hosts
- `storage`: the shared filesystem, unless `storage.kind` is none
- `monitoring`: exporters and Prometheus, when any of them is on
- `platform`: the Kubernetes platform services (scheduler kubernetes)
- `certification`: last, after everything above

The stages that apply roles are hashed into the provisioning hash: what
certification certifies, so a change to any of them certifies again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kiln.config import Cluster
from kiln.errors import UsageError
from kiln.kubernetes.versions import VALIDATION_IMAGE
from kiln.plays import DriverOwner, Stage
from kiln.provision import ROLES_DIR
from kiln.stack import cross_checks, deployment_problems

StageKey = Literal["node", "storage", "monitoring", "platform", "certification"]


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a deployment: one component of the Cluster."""

    key: StageKey
    name: str
    """The component's name after the cluster's: `<cluster>-<name>`."""
    roles: Stage | None
    """The stage of roles/site.yml it applies (`kiln.plays`); None where it applies no roles."""
    after: tuple[StageKey, ...]
    """The stages it depends on, all earlier in the plan."""

    @property
    def hashed(self) -> bool:
        """Part of the provisioning hash: applying roles is what changes the hosts."""
        return self.roles is not None


@dataclass(frozen=True)
class DeploymentPlan:
    """The stages of one stack's deployment, and the plain inputs the components share."""

    cluster: Cluster
    roles_dir: Path
    """The roles tree hashed and applied."""
    validation_image: str
    """Kubernetes stacks: the image of the certification Job."""
    stages: tuple[PlannedStage, ...]
    """In the order they are built; a stage's `after` names only earlier ones."""

    @property
    def driver_owner(self) -> DriverOwner:
        """Who installs the GPU driver: the `nvidia_driver` role or the GPU Operator."""
        return self.cluster.gpu_driver_owner

    @property
    def kubernetes(self) -> bool:
        """Whether the stack deploys to Kubernetes (a provider, the Kiln namespace, platform)."""
        return self.cluster.scheduler == "kubernetes"

    @property
    def hashed(self) -> tuple[StageKey, ...]:
        """The stages whose applied hashes make the provisioning hash."""
        return tuple(s.key for s in self.stages if s.hashed)


def plan_deployment(
    cluster: Cluster,
    *,
    has_kubeconfig: bool = False,
    roles_dir: Path = ROLES_DIR,
    validation_image: str = VALIDATION_IMAGE,
) -> DeploymentPlan:
    """The stages `pulumi up` builds for `cluster`; UsageError for what it cannot build."""
    check_deployment(cluster, has_kubeconfig)
    stages = [PlannedStage("node", "provisioning", "node", after=())]
    if cluster.storage.kind != "none":
        stages.append(PlannedStage("storage", "storage", "storage", after=("node",)))
    monitoring = cluster.monitoring
    if monitoring.prometheus or monitoring.node_exporter or monitoring.dcgm_exporter:
        stages.append(PlannedStage("monitoring", "monitoring", "monitoring", after=("node",)))
    # The platform waits for every host stage: its operators go onto finished
    # hosts, and the GPU Operator's ServiceMonitor needs kube-prometheus-stack's CRDs.
    if cluster.scheduler == "kubernetes":
        stages.append(PlannedStage("platform", "platform", None, after=_keys(stages)))
    stages.append(PlannedStage("certification", "certification", None, after=_keys(stages)))
    return DeploymentPlan(cluster, roles_dir, validation_image, tuple(stages))


def check_deployment(cluster: Cluster, has_kubeconfig: bool) -> None:
    """What the program cannot build, said before any resource is registered: the same
    rules `kiln config check` applies (`kiln.stack`), not a second copy of them."""
    problems = cross_checks(cluster) + deployment_problems(cluster, has_kubeconfig)
    if problems:
        raise UsageError("; ".join(str(p) for p in problems))


def _keys(stages: list[PlannedStage]) -> tuple[StageKey, ...]:
    return tuple(s.key for s in stages)
