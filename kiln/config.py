"""The one typed model of a Kiln stack config.

Every consumer (the `kiln` CLI, the Pulumi program, inventory generation) reads
this model, never raw dicts. YAML keys are camelCase, as Pulumi stack files
are; Python attributes are snake_case. Unknown keys are errors: a typo such as
`nodepools` must not silently drop a whole pool.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

# RFC 1123 label: what a node can be called in DNS, Slurm and Kubernetes alike.
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^\d+(\.\d+){1,3}(-\d+)?$")
# Short tag that prefixes every kernel object of a lab (interface names are
# limited to 15 characters, so it must stay short).
_LAB_ID = re.compile(r"^[a-z][a-z0-9]{0,5}$")
# One word: the model names the Slurm GRES type (`Gres=gpu:<type>:<n>`), where
# spaces, ':' and ',' would split the specification.
_GPU_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid host name (lowercase letters, digits and '-', "
            "at most 63 characters, not starting or ending with '-')"
        )
    return value


def _version(value: str) -> str:
    if not _VERSION.match(value):
        raise ValueError(f"{value!r} is not a version like '550.127.08' or '2.21.5'")
    return value


def _gpu_model(value: str) -> str:
    if not _GPU_MODEL.match(value):
        raise ValueError(
            f"{value!r} is not a GPU model name: one word of letters, digits, '.', '_' "
            "or '-' (e.g. 'H100-SXM5-80GB'); it becomes the Slurm GRES type"
        )
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]
Version = Annotated[str, AfterValidator(_version)]
GpuModel = Annotated[str, AfterValidator(_gpu_model)]


class _Model(BaseModel):
    """Base: camelCase keys in YAML, unknown keys rejected, immutable once loaded."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class PulumiSecret(_Model):
    """A value Pulumi encrypted in the stack file (`{secure: <ciphertext>}`).

    Only the Pulumi engine can decrypt it; the CLI needs the clear value from
    a file or the environment instead (see `SshSettings`).
    """

    secure: str


Secret = SecretStr | PulumiSecret

NodeRole = Literal["controller", "compute", "storage"]


class Host(_Model):
    """One machine of a pool."""

    name: Hostname
    address: ipaddress.IPv4Address | None = Field(
        default=None, description="Required for static pools; lab pools assign one if absent."
    )
    roles: list[NodeRole] = Field(default_factory=lambda: ["compute"])


# Where host keys are looked up when a pool names no knownHosts.
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class SshSettings(_Model):
    """How Kiln reaches a pool's hosts. Lab pools ignore this: the lab owns its key."""

    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    private_key_path: str | None = Field(
        default=None, description="Path of an OpenSSH private key file (CLI use)."
    )
    private_key: Secret | None = Field(
        default=None, description="The key itself, as a Pulumi secret (pulumi up)."
    )
    known_hosts: str | None = Field(
        default=None,
        description=f"known_hosts lines or a file path (default {DEFAULT_KNOWN_HOSTS}); "
        "hosts are verified.",
    )
    host_key_policy: Literal["strict", "trust-on-first-use"] = Field(
        default="strict",
        description="strict: a host whose key is not in knownHosts is refused; "
        "trust-on-first-use: such a host's key is learnt on first contact and recorded in "
        "Kiln's state (never in knownHosts), said by fingerprint, and verified ever after. "
        "A changed key stops that host under either policy.",
    )


class GpuSettings(_Model):
    """What each node of a GPU pool carries, and the driver stack pinned for it."""

    model: GpuModel
    per_node: int = Field(ge=1, le=16)
    driver: Version
    cuda: Version | None = None
    nccl: Version
    fabric_manager: bool = Field(
        default=False, description="NVSwitch systems (HGX 8-GPU) need nvidia-fabricmanager."
    )
    repository: str | None = Field(
        default=None,
        description="Flat apt repository of NVIDIA's packages (a site mirror); "
        "default NVIDIA's CUDA repository.",
    )
    repository_key: str | None = Field(
        default=None, description="URL of the repository's signing key (.asc or .gpg)."
    )

    @field_validator("repository", "repository_key")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|file)://\S+$", value):
            raise ValueError(f"{value!r} is not an http(s):// or file:// URL")
        return value


class RdmaSettings(_Model):
    """The RDMA fabric between nodes."""

    fabric: Literal["infiniband", "roce", "none"] = "none"
    hcas: list[str] = Field(default_factory=list)
    mtu: Literal[256, 512, 1024, 2048, 4096] = 4096
    required: bool = Field(
        default=False, description="Fail provisioning when a host has no RDMA device."
    )


class NodePool(_Model):
    """A set of reachable Linux hosts that share hardware and settings."""

    name: Hostname
    provider: Literal["static", "lab"]
    hosts: list[Host] = Field(min_length=1)
    ssh: SshSettings = Field(default_factory=SshSettings)
    gpu: GpuSettings | None = None
    rdma: RdmaSettings = Field(default_factory=RdmaSettings)


class LabSettings(_Model):
    """Where lab machines live on this Linux host."""

    id: str = Field(default="lab", description="Short tag prefixing every kernel object.")
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.77.0.0/24")
    suite: Literal["bookworm"] = "bookworm"
    mirror: str | None = Field(
        default=None, description="Debian mirror URL; default: the host's own apt source."
    )

    @field_validator("id")
    @classmethod
    def _short_id(cls, value: str) -> str:
        if not _LAB_ID.match(value):
            raise ValueError(
                f"{value!r}: lab id must be 1-6 lowercase letters/digits starting with a letter"
            )
        return value

    @field_validator("subnet")
    @classmethod
    def _private_slash24(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if value.prefixlen != 24 or not value.is_private:
            raise ValueError(f"{value}: the lab needs a private /24 (e.g. 10.77.0.0/24)")
        return value

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The bridge's address: the first host address of the subnet."""
        return self.subnet.network_address + 1


class StorageSettings(_Model):
    """The shared filesystem every node mounts (datasets, the validation runtime)."""

    kind: Literal["none", "nfs", "glusterfs"] = "none"
    server: str | None = None
    export: str | None = None
    mount_point: str = "/shared"
    options: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _server_for_network_fs(self) -> StorageSettings:
        if self.kind == "nfs" and (not self.server or not self.export):
            raise ValueError("nfs storage needs both 'server' and 'export'")
        if not self.mount_point.startswith("/"):
            raise ValueError(f"mountPoint {self.mount_point!r} must be an absolute path")
        return self


class BasicAuth(_Model):
    """HTTP basic auth in front of the exporters and Prometheus (their web config files)."""

    user: str = Field(default="kiln", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    password: Secret | None = Field(
        default=None, description="The password, as a Pulumi secret (pulumi up)."
    )
    password_file: str | None = Field(
        default=None, description="Path of a file holding the password (CLI use)."
    )


class WebTls(_Model):
    """TLS for the exporters and Prometheus: PEM files on the machine that provisions."""

    certificate_file: str
    key_file: str


class MonitoringSettings(_Model):
    """Metrics collection."""

    prometheus: bool = True
    node_exporter: bool = True
    dcgm_exporter: bool = False
    retention: str = Field(default="15d", pattern=r"^\d+[hdwy]$")
    basic_auth: BasicAuth | None = None
    tls: WebTls | None = None


_SIZE = r"^\d+[KMG]?$"


class AllreduceSettings(_Model):
    """The allreduce sweep certification runs (nccl-tests `-b -e -f`, dtypes, timing).

    The headline bus bandwidth rules read is the busbw at `maxBytes` of the
    first dtype (`validation.results.headline_busbw`), on every launcher.
    """

    min_bytes: str = Field(default="1M", pattern=_SIZE, description="Smallest message, e.g. 1M.")
    max_bytes: str = Field(default="64M", pattern=_SIZE, description="Largest message (headline).")
    factor: int = Field(default=4, ge=2, le=16)
    dtypes: list[Literal["float32", "bfloat16", "float16"]] = Field(
        default_factory=lambda: ["float32"], min_length=1
    )
    warmup_iters: int = Field(default=5, ge=0, le=1000)
    iters: int = Field(default=20, ge=1, le=10000)
    repeat: int = Field(default=3, ge=1, le=100)


class ModelsBenchSettings(_Model):
    """The training-scaling ladder (`python -m validation.models`, profile full)."""

    preset: Literal["auto", "tiny", "full"] = Field(
        default="auto",
        description="Model sizes: full (ResNet-50 at 224, BERT-large) on GPU pools, tiny "
        "on CPU; auto picks by whether the computes have GPUs.",
    )
    workloads: list[str] = Field(
        default_factory=list, description="Workloads of the preset to run (default: all)."
    )
    batch: int | None = Field(default=None, ge=1, description="Per-rank batch (weak scaling).")
    steps: int | None = Field(default=None, ge=1, le=10000, description="Timed steps per run.")
    ladder: list[int] = Field(
        default_factory=list,
        description="Node counts to run at (default: 1, 2, 4, ... and all computes).",
    )


class StorageBenchSettings(_Model):
    """The shared-filesystem read benchmark (`python -m validation.storage`, profile full)."""

    workloads: list[Literal["large", "small"]] = Field(
        default_factory=lambda: ["large", "small"], min_length=1
    )
    large_size: str = Field(default="256M", pattern=_SIZE)
    large_count: int = Field(default=2, ge=1, le=1000, description="Large files per rank.")
    small_size: str = Field(default="64K", pattern=_SIZE)
    small_count: int = Field(default=2000, ge=1, le=1_000_000, description="Small files per rank.")


class GemmSettings(_Model):
    """The per-GPU matmul benchmark (`python -m validation.gemm`, profile full)."""

    size: int | None = Field(
        default=None, ge=64, le=65536, description="M = N = K (default: 8192 on GPU, 1024 on CPU)."
    )
    dtypes: list[Literal["bf16", "fp16", "tf32", "fp32"]] = Field(
        default_factory=list, description="Default: all on GPU; fp32 (and bf16 if native) on CPU."
    )


class CertificationSettings(_Model):
    """How a deployed cluster is certified (`kiln certify`, the Certification resource)."""

    baseline: str | None = Field(
        default=None,
        description="Baseline class (stacks/baselines/<class>.yaml) or a path to a baseline file.",
    )
    profile: Literal["quick", "full"] = "quick"
    timeout_seconds: int = Field(default=120, ge=5, le=3600)
    allreduce: AllreduceSettings = Field(default_factory=AllreduceSettings)
    gemm: GemmSettings = Field(default_factory=GemmSettings)
    storage: StorageBenchSettings = Field(default_factory=StorageBenchSettings)
    models: ModelsBenchSettings = Field(default_factory=ModelsBenchSettings)
    referee: Hostname | None = Field(
        default=None,
        description="A known-good host on the same network that isolation pairs suspects with "
        "when no compute is known good (default: the first controller that is not a compute).",
    )
    parallel_isolation: bool | None = Field(
        default=None,
        description="Run disjoint isolation groups at the same time (default: yes, except on "
        "lab pools, whose machines share this host's CPUs and would slow each other).",
    )


_BATCH = r"^([1-9]\d*|([1-9]\d?|100)%)$"


class RuntimeSource(_Model):
    """Where nodes get the validation runtime's Python packages (default: pip's index).

    Lab pools keep the lab's own: its wheelhouse and venv archives, mounted from this host.
    """

    wheelhouse: str | None = Field(
        default=None,
        description="A directory of wheels on every node (mounted before Kiln runs): pip "
        "installs from it with --no-index.",
    )
    index_url: str | None = Field(
        default=None,
        description="A package index (a PyPI mirror) pip installs from; without credentials "
        "(they belong in the nodes' pip.conf or .netrc, not in a stack file or a log).",
    )
    venv_archives: str | None = Field(
        default=None,
        description="A directory every node reads and writes, shared between them and "
        "mounted before Kiln runs: a venv one node's pip built is kept there, and nodes "
        "that need the same venv unpack it instead of running pip.",
    )

    @model_validator(mode="after")
    def _sources(self) -> RuntimeSource:
        for key, path in (("wheelhouse", self.wheelhouse), ("venvArchives", self.venv_archives)):
            if path is not None and not path.startswith("/"):
                raise ValueError(f"{key} {path!r} must be an absolute path on the nodes")
        if self.index_url is not None and not re.match(
            r"^https?://[^/@\s]+(/\S*)?$", self.index_url
        ):
            # Only what follows an @ is shown: what precedes it may be a password.
            raise ValueError(
                "indexUrl must be an http(s):// URL without credentials (user:password@): "
                f"put them in the nodes' pip.conf or .netrc; got {self.index_url.split('@')[-1]!r}"
            )
        if self.wheelhouse is not None and self.index_url is not None:
            raise ValueError("set wheelhouse or indexUrl, not both: pip uses one source")
        return self


class ProvisioningSettings(_Model):
    """How `kiln provision` (and `pulumi up`) drives Ansible across a fleet."""

    forks: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Hosts Ansible works on at once (parallel SSH sessions from this machine).",
    )
    batch_size: str = Field(
        default="100%",
        pattern=_BATCH,
        description="Hosts per rolling batch (Ansible `serial`): a count such as 50 or a "
        "percentage such as 10%; each batch finishes every play before the next starts.",
    )
    mitogen: bool = Field(
        default=True,
        description="Run Ansible through Mitogen: one Python interpreter per host for the "
        "whole run instead of a module upload per task (about twice as fast on the lab); "
        "false: Ansible's own SSH connection.",
    )
    max_fail_percentage: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Stop the run when more than this percentage of a batch's hosts fail "
        "(100: never stop; the failed hosts are reported and the others finish).",
    )
    runtime: RuntimeSource = Field(
        default_factory=RuntimeSource,
        description="Where nodes get the validation runtime's Python packages.",
    )


class Cluster(_Model):
    """The whole stack: `kiln:cluster` in `stacks/Pulumi.<env>.yaml`."""

    name: Hostname
    node_pools: list[NodePool] = Field(min_length=1)
    lab: LabSettings | None = None
    storage: StorageSettings = Field(default_factory=StorageSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    scheduler: Literal["slurm", "kubernetes"] = "slurm"
    certification: CertificationSettings = Field(default_factory=CertificationSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    management_network: ipaddress.IPv4Network | None = Field(
        default=None,
        description="The network node_exporter, dcgm-exporter and Prometheus listen on: each "
        "host binds to its own address in it (default: the host's address in the stack).",
    )
    gpu_driver_owner: Literal["roles", "operator"] = Field(
        default="roles",
        description="Who installs the GPU driver (with fabric manager, nvidia-peermem and the "
        "container toolkit): Kiln's roles, or the GPU Operator (scheduler kubernetes only).",
    )

    @property
    def hosts(self) -> list[Host]:
        """Every host of every pool, in file order."""
        return [h for p in self.node_pools for h in p.hosts]

    @property
    def lab_pools(self) -> list[NodePool]:
        return [p for p in self.node_pools if p.provider == "lab"]

    @property
    def lab_settings(self) -> LabSettings:
        """The lab settings in force (defaults when the file has no `lab:` block)."""
        return self.lab or LabSettings()
