"""Load a stack config into the `kiln.config.Cluster` model, or explain every problem.

Two sources feed the same model: `stacks/Pulumi.<stack>.yaml` files (the CLI)
and the Pulumi engine's config (the program). Both go through `cluster_from_keys`
so they can never disagree on what a valid stack is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from kiln import monitoring_web, redact
from kiln.config import DEFAULT_KNOWN_HOSTS, Cluster, Host, LabSettings
from kiln.keyfiles import is_known_hosts_lines

KEY_PREFIX = "kiln:"
# Top-level keys Pulumi itself writes into stack files; anything else is a typo.
_PULUMI_STACK_KEYS = {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"}
# The only `kiln:*` config keys; an unknown one is an error, not ignored.
# `kubeconfig` (a Pulumi secret, Kubernetes stacks) sits beside the cluster model:
# it is a whole file, set with `pulumi config set --secret kiln:kubeconfig < file`.
_KILN_KEYS = {"cluster", "kubeconfig"}
# Keys that have moved into the cluster model, and where to.
_MOVED_KEYS = {"gpuDriverOwner": "kiln:cluster.gpuDriverOwner"}
# Lab hosts without an explicit address get one from here up, in file order.
_FIRST_LAB_HOST = 10


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack config: where, and what to fix."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """A stack config that cannot be used; carries every problem found."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))


def find_project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` holding `Pulumi.yaml`."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file():
            return candidate
    # Installed without a checkout: the package's own project directory.
    return Path(__file__).resolve().parent.parent


def stack_file(stack: str, stacks_dir: Path | None = None) -> Path:
    """Path of `Pulumi.<stack>.yaml` in the project's stack config directory."""
    directory = stacks_dir or find_project_root() / "stacks"
    return directory / f"Pulumi.{stack}.yaml"


def load_stack(stack: str, stacks_dir: Path | None = None) -> Cluster:
    """Read and validate a stack file; raise ConfigError listing every problem."""
    path = stack_file(stack, stacks_dir)
    source = str(path)
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("Pulumi.*.yaml"))
        raise ConfigError(
            source,
            [
                Problem(
                    path.name, f"no such stack file (available: {', '.join(available) or 'none'})"
                )
            ],
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(source, [Problem(path.name, f"not valid YAML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        # A file corrupted on disk (or not a stack file at all) is bad input, not a crash.
        problem = f"not UTF-8 text (byte {exc.start}: {exc.reason}): is the file corrupted?"
        raise ConfigError(source, [Problem(path.name, problem)]) from None
    except OSError as exc:
        raise ConfigError(source, [Problem(path.name, f"cannot read: {exc.strerror}")]) from None
    return cluster_from_document(document, source)


def cluster_from_document(document: Any, source: str) -> Cluster:
    """Validate a parsed stack file (`{config: {kiln:cluster: ...}}`)."""
    if not isinstance(document, Mapping):
        raise ConfigError(source, [Problem("(file)", "expected a mapping with a 'config' key")])
    problems = [
        Problem(str(key), f"unknown top-level key (expected one of {sorted(_PULUMI_STACK_KEYS)})")
        for key in document
        if key not in _PULUMI_STACK_KEYS
    ]
    config = document.get("config")
    if not isinstance(config, Mapping):
        problems.append(Problem("config", "missing or not a mapping"))
        raise ConfigError(source, problems)
    kiln_keys = {
        key.removeprefix(KEY_PREFIX): value
        for key, value in config.items()
        if isinstance(key, str) and key.startswith(KEY_PREFIX)
    }
    try:
        return cluster_from_keys(kiln_keys, source)
    except ConfigError as exc:
        raise ConfigError(source, problems + exc.problems) from None


def cluster_from_keys(keys: Mapping[str, Any], source: str) -> Cluster:
    """Validate the `kiln:*` keys (without prefix), e.g. from `pulumi.Config("kiln")`."""
    problems = [
        Problem(
            f"{KEY_PREFIX}{key}",
            f"moved: set {_MOVED_KEYS[key]} instead"
            if key in _MOVED_KEYS
            else f"unknown key (expected one of {sorted(_KILN_KEYS)})",
        )
        for key in keys
        if key not in _KILN_KEYS
    ]
    kubeconfig = keys.get("kubeconfig")
    if kubeconfig is not None and not _is_secret_value(kubeconfig):
        problems.append(
            Problem(
                f"{KEY_PREFIX}kubeconfig",
                "must be the kubeconfig as a Pulumi secret: "
                "pulumi config set --secret kiln:kubeconfig < kubeconfig.yaml",
            )
        )
    if "cluster" not in keys:
        problems.append(Problem(f"{KEY_PREFIX}cluster", "missing: the stack has no cluster"))
        raise ConfigError(source, problems)
    try:
        cluster = Cluster.model_validate(keys["cluster"])
    except ValidationError as exc:
        problems += _from_validation_error(exc)
        raise ConfigError(source, problems) from None
    cluster = _assign_lab_addresses(cluster)
    redact.register_all(redact.secret_fields(cluster))
    problems += cross_checks(cluster)
    problems += deployment_problems(cluster, has_kubeconfig=kubeconfig is not None)
    if problems:
        raise ConfigError(source, problems)
    return cluster


def _is_secret_value(value: Any) -> bool:
    """A kubeconfig as Pulumi keeps it: ciphertext `{secure: ...}`, or the clear text the
    engine hands the program."""
    if isinstance(value, Mapping):
        return set(value) == {"secure"} and isinstance(value["secure"], str)
    return isinstance(value, str) and bool(value.strip())


def deployment_problems(cluster: Cluster, has_kubeconfig: bool) -> list[Problem]:
    """What a deployment of `cluster` needs beyond the model: the one place these rules
    live, called by every front door (`kiln config check` and the other commands through
    `cluster_from_keys`, the Pulumi program through `kiln.deployment.check_deployment`)."""
    if cluster.scheduler == "kubernetes" and not has_kubeconfig:
        return [
            Problem(
                f"{KEY_PREFIX}kubeconfig",
                "missing: scheduler kubernetes needs the cluster's kubeconfig: "
                "pulumi config set --secret kiln:kubeconfig < kubeconfig.yaml",
            )
        ]
    return []


def setting_notes(cluster: Cluster) -> list[Problem]:
    """Valid settings that will stop provisioning later, said now: a GPU pool without
    `cuda` cannot have its NCCL build chosen (NVIDIA builds each NCCL once per CUDA
    release), so the nccl role stops there and lists the builds its repository has."""
    notes = []
    for i, pool in enumerate(cluster.node_pools):
        if pool.gpu is None or pool.gpu.cuda:
            continue
        notes.append(
            Problem(
                f"kiln:cluster.nodePools[{i}].gpu.cuda",
                f"unset: NCCL {pool.gpu.nccl} comes in one build per CUDA release, so "
                "provisioning will stop at the nccl role; set the CUDA release your jobs use "
                "(e.g. 12.4)",
            )
        )
    return notes


def cross_checks(cluster: Cluster) -> list[Problem]:
    """Rules that span fields or pools, each with the exact key path to fix."""
    problems: list[Problem] = []
    pools = "kiln:cluster.nodePools"
    problems += _duplicates(
        ((f"{pools}[{i}].name", p.name) for i, p in enumerate(cluster.node_pools)), "node pool name"
    )
    problems += _duplicates(
        ((f"{path}.name", h.name) for path, h in _host_paths(cluster)), "host name"
    )
    problems += _duplicates(
        ((f"{path}.address", str(h.address)) for path, h in _host_paths(cluster) if h.address),
        "host address",
    )
    for i, pool in enumerate(cluster.node_pools):
        if pool.provider != "static":
            continue
        for j, host in enumerate(pool.hosts):
            if host.address is None:
                problems.append(
                    Problem(f"{pools}[{i}].hosts[{j}].address", "required for static pools")
                )
        if pool.ssh.private_key is None and pool.ssh.private_key_path is None:
            problems.append(
                Problem(
                    f"{pools}[{i}].ssh",
                    "missing SSH key: set privateKeyPath (CLI) or privateKey (Pulumi secret); "
                    "Kiln never falls back to whatever key is on this machine",
                )
            )
    storage = cluster.storage
    if (
        storage.kind == "glusterfs"
        and not storage.server
        and not any("storage" in h.roles for h in cluster.hosts)
    ):
        problems.append(
            Problem(
                "kiln:cluster.storage.server",
                "glusterfs needs a server: set it, or give a host the role 'storage'",
            )
        )
    for i, pool in enumerate(cluster.node_pools):
        if pool.rdma.required and pool.rdma.fabric == "none":
            problems.append(
                Problem(
                    f"kiln:cluster.nodePools[{i}].rdma.required",
                    "RDMA is required but fabric is 'none': set infiniband or roce",
                )
            )
    if len(cluster.lab_pools) > 1:
        problems.append(
            Problem(
                pools,
                f"{', '.join(p.name for p in cluster.lab_pools)} are all lab pools; a stack has "
                "one lab (one id, bridge and subnet): merge them into one pool",
            )
        )
    if cluster.gpu_driver_owner == "operator" and cluster.scheduler != "kubernetes":
        problems.append(
            Problem(
                "kiln:cluster.gpuDriverOwner",
                "operator: the GPU Operator can own the driver only with scheduler: kubernetes "
                "(set roles, or scheduler kubernetes)",
            )
        )
    if cluster.lab_pools:
        problems += _lab_address_problems(cluster)
    if cluster.scheduler == "slurm":
        problems += _slurm_problems(cluster)
    problems += _certification_problems(cluster)
    problems += _monitoring_problems(cluster)
    return problems


def _monitoring_problems(cluster: Cluster) -> list[Problem]:
    """Basic auth needs a password, TLS its two files; kube-prometheus-stack (Kubernetes
    stacks) scrapes the hosts' node_exporter at their stack address, in plain HTTP."""
    monitoring, path = cluster.monitoring, "kiln:cluster.monitoring"
    problems = []
    auth = monitoring.basic_auth
    if auth is not None and auth.password is None and not auth.password_file:
        problems.append(
            Problem(
                f"{path}.basicAuth",
                "needs the password: set password (a Pulumi secret, for pulumi up) or "
                "passwordFile (a file, for the CLI); both may be set",
            )
        )
    if auth is not None and isinstance(auth.password, SecretStr):
        problem = monitoring_web.password_problem(auth.password.get_secret_value())
        if problem:
            problems.append(Problem(f"{path}.basicAuth.password", problem))
    tls = monitoring.tls
    if tls is not None:
        for key, name in (("certificateFile", tls.certificate_file), ("keyFile", tls.key_file)):
            if not name.strip():
                problems.append(Problem(f"{path}.tls.{key}", "empty: the path of a PEM file"))
    if cluster.scheduler == "kubernetes" and monitoring.node_exporter:
        if auth is not None or tls is not None:
            problems.append(
                Problem(
                    f"{path}.{'basicAuth' if auth is not None else 'tls'}",
                    "not on scheduler kubernetes yet: kube-prometheus-stack scrapes the hosts' "
                    "node_exporter in plain HTTP and would be refused",
                )
            )
        network = cluster.management_network
        outside = [h.name for h in cluster.hosts if network and h.address not in network]
        if outside:
            problems.append(
                Problem(
                    "kiln:cluster.managementNetwork",
                    f"{', '.join(outside)} have their stack address outside {network}: on "
                    "scheduler kubernetes kube-prometheus-stack scrapes node_exporter there",
                )
            )
    return problems


def _certification_problems(cluster: Cluster) -> list[Problem]:
    referee = cluster.certification.referee
    names = {h.name for h in cluster.hosts}
    if referee is not None and referee not in names:
        return [
            Problem(
                "kiln:cluster.certification.referee",
                f"{referee!r} is not a host of this stack (hosts: {', '.join(sorted(names))})",
            )
        ]
    return []


def check_key_files(cluster: Cluster, reach: bool = False) -> list[Problem]:
    """SSH files named by the config, checked where the CLI runs, before any host is touched.

    Always: a `privateKeyPath` must be a readable private key. With `reach` (commands
    that log in to the hosts: `kiln provision`, `kiln certify`), every static pool
    also needs a key this machine can use (a file, or a clear `privateKey`; Pulumi
    ciphertext is not one), and under `hostKeyPolicy: strict` a readable `knownHosts`
    file. `kiln config check` does not reach: a stack whose keys are Pulumi secrets
    passes it. Also, always: the monitoring's password and TLS files, where named.
    File contents are never echoed.
    """
    problems = []
    for i, pool in enumerate(cluster.node_pools):
        if pool.provider != "static":
            continue
        ssh = f"kiln:cluster.nodePools[{i}].ssh"
        key = pool.ssh.private_key_path
        if key:
            problem = _unreadable(key, lambda head: b"PRIVATE KEY-----" in head, _PRIVATE_KEY)
            if problem:
                problems.append(Problem(f"{ssh}.privateKeyPath", problem))
        if not reach:
            continue
        if key is None and not isinstance(pool.ssh.private_key, SecretStr):
            problems.append(
                Problem(
                    f"{ssh}.privateKeyPath",
                    "missing: this command logs in to the hosts and cannot decrypt the Pulumi "
                    "secret privateKey; set privateKeyPath to the key file (both may be set)",
                )
            )
        known = pool.ssh.known_hosts or DEFAULT_KNOWN_HOSTS
        if pool.ssh.host_key_policy == "strict" and not is_known_hosts_lines(known):
            problem = _unreadable(known, lambda head: True, "a known_hosts file")
            if problem:
                problems.append(
                    Problem(
                        f"{ssh}.knownHosts",
                        f"{problem}; under hostKeyPolicy strict every host would be refused: "
                        "give the file, or set hostKeyPolicy: trust-on-first-use",
                    )
                )
    problems += _monitoring_files(cluster)
    return problems


def _monitoring_files(cluster: Cluster) -> list[Problem]:
    """The monitoring's password and TLS files, where they are given: readable, and what
    they should be (contents never echoed)."""
    auth, tls, path = cluster.monitoring.basic_auth, cluster.monitoring.tls, "kiln:cluster"
    problems, files = [], []
    if auth is not None and auth.password_file:
        files.append(("basicAuth.passwordFile", auth.password_file, b"", "a password file"))
    if tls is not None:
        files.append(("tls.certificateFile", tls.certificate_file, b"CERTIFICATE-", "a PEM file"))
        files.append(("tls.keyFile", tls.key_file, b"PRIVATE KEY-", "a PEM private key"))
    for key, name, marker, what in files:
        if not name.strip():
            continue
        problem = _unreadable(name, lambda head, m=marker: bool(head.strip()) and m in head, what)
        if problem:
            problems.append(Problem(f"{path}.monitoring.{key}", problem))
    return problems


_PRIVATE_KEY = "a private key"


def _unreadable(name: str, looks_right: Callable[[bytes], bool], what: str) -> str | None:
    """Why the file `name` cannot serve as `what`, or None when it can."""
    path = Path(name).expanduser()
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except FileNotFoundError:
        return f"no such file: {name}"
    except IsADirectoryError:
        return f"{name} is a directory, not {what}"
    except PermissionError:
        return f"{name} cannot be read by this user"
    except OSError as exc:
        return f"{name} cannot be read: {exc.strerror or type(exc).__name__}"
    if not looks_right(head):
        return f"{name} is not {what}"
    if what == _PRIVATE_KEY:
        redact.register(head)
    return None


def _host_paths(cluster: Cluster) -> Iterable[tuple[str, Host]]:
    for i, pool in enumerate(cluster.node_pools):
        for j, host in enumerate(pool.hosts):
            yield f"kiln:cluster.nodePools[{i}].hosts[{j}]", host


def _duplicates(items: Iterable[tuple[str, str]], what: str) -> list[Problem]:
    first_seen: dict[str, str] = {}
    problems = []
    for path, value in items:
        if value in first_seen:
            problems.append(
                Problem(path, f"duplicate {what} {value!r} (first at {first_seen[value]})")
            )
        else:
            first_seen[value] = path
    return problems


def _slurm_problems(cluster: Cluster) -> list[Problem]:
    """Slurm gets one partition per pool of compute hosts; none may be empty.

    Pools without compute hosts (a controller or storage pool) are service pools,
    not partitions. A GPU pool is always meant to run jobs, so a GPU pool with no
    compute host would be a partition with no nodes. (A compute host listed twice
    is already a duplicate host name.)
    """
    pools = "kiln:cluster.nodePools"
    problems = []
    if not any("compute" in h.roles for h in cluster.hosts):
        problems.append(
            Problem(
                pools,
                "scheduler slurm needs at least one host with role 'compute' "
                "(a partition with no nodes cannot run jobs)",
            )
        )
    for i, pool in enumerate(cluster.node_pools):
        if pool.gpu and not any("compute" in h.roles for h in pool.hosts):
            problems.append(
                Problem(
                    f"{pools}[{i}].hosts",
                    f"pool {pool.name!r} has GPUs but no host with role 'compute': "
                    "its Slurm partition would have no nodes",
                )
            )
    controllers = [(path, h) for path, h in _host_paths(cluster) if "controller" in h.roles]
    for path, host in controllers[1:]:
        problems.append(
            Problem(
                f"{path}.roles",
                f"{host.name!r} would be a second Slurm controller: Kiln runs one slurmctld "
                f"(on {controllers[0][1].name!r})",
            )
        )
    return problems


def _lab_address_problems(cluster: Cluster) -> list[Problem]:
    lab = cluster.lab_settings
    reserved = {lab.subnet.network_address, lab.subnet.broadcast_address, lab.gateway}
    problems = []
    lab_pool_names = {p.name for p in cluster.lab_pools}
    for i, pool in enumerate(cluster.node_pools):
        if pool.name not in lab_pool_names:
            continue
        for j, host in enumerate(pool.hosts):
            path = f"kiln:cluster.nodePools[{i}].hosts[{j}].address"
            if host.address is None:
                problems.append(Problem(path, f"no free address left in {lab.subnet}"))
            elif host.address not in lab.subnet:
                problems.append(
                    Problem(path, f"{host.address} is outside the lab subnet {lab.subnet}")
                )
            elif host.address in reserved:
                problems.append(
                    Problem(path, f"{host.address} is reserved (network, broadcast or lab gateway)")
                )
    return problems


def _assign_lab_addresses(cluster: Cluster) -> Cluster:
    """Give lab hosts without an address the lowest free ones from .10 up."""
    lab: LabSettings = cluster.lab_settings
    taken = {h.address for h in cluster.hosts if h.address}
    free = (a for a in list(lab.subnet.hosts())[_FIRST_LAB_HOST - 1 : -1] if a not in taken)
    pools = []
    for pool in cluster.node_pools:
        if pool.provider == "lab":
            hosts = [
                h if h.address else h.model_copy(update={"address": next(free, None)})
                for h in pool.hosts
            ]
            pool = pool.model_copy(update={"hosts": hosts})
        pools.append(pool)
    return cluster.model_copy(update={"node_pools": pools})


def _from_validation_error(exc: ValidationError) -> list[Problem]:
    # Values from the file are never echoed: a secret pasted under the wrong
    # key would otherwise land in a terminal or CI log.
    problems = []
    for error in exc.errors(include_url=False):
        path = "kiln:cluster" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(Problem(path, message))
    return problems
