"""Preflight facts of a host over SSH, and whether a host changed since they were recorded.

One SSH command gathers what decides whether provisioning still holds for a
host: identity (hostname, machine-id), kernel and OS, CPU and memory size, GPU
driver and NCCL versions and RDMA devices when present. The Pulumi Preflight
resource records them per host; its diff calls `diff_host`, so `pulumi
preview` shows a host that was reinstalled, upgraded or moved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import ssh
from kiln.errors import KilnError, UsageError
from kiln.keyfiles import known_hosts_path, private_dir, write_private

# POSIX sh: runs the same under dash and bash. Absent tools print nothing, so
# a host without GPUs or RDMA yields facts without them rather than an error.
FACTS_COMMAND = r"""
LC_ALL=C; export LC_ALL
echo "hostname=$(hostname)"
echo "kernel=$(uname -r)"
echo "arch=$(uname -m)"
( . /etc/os-release 2>/dev/null && echo "os=${ID:-unknown} ${VERSION_ID:-}" )
echo "cpus=$(getconf _NPROCESSORS_ONLN)"
awk '/^MemTotal:/ {print "memory_kib=" $2}' /proc/meminfo
[ -r /etc/machine-id ] && echo "machine_id=$(cat /etc/machine-id)"
if [ -r /proc/driver/nvidia/version ]; then
  awk '/NVRM version/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+(\.[0-9]+)?$/) \
    {print "gpu_driver=" $i; exit}}' /proc/driver/nvidia/version
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null \
    | awk 'NR == 1 {m = $0} END {print "gpus=" NR; if (NR) print "gpu_model=" m}'
fi
nccl=$(dpkg-query -W -f='${Version}' libnccl2 2>/dev/null \
  || rpm -q --qf '%{VERSION}' libnccl 2>/dev/null \
  || ls /usr/lib/x86_64-linux-gnu/libnccl.so.2.* /usr/lib64/libnccl.so.2.* 2>/dev/null | head -n 1)
echo "nccl=${nccl##*libnccl.so.}"
# The GPU stack as installed (dpkg), which a host without a GPU has too and
# which the loaded driver above differs from until a reboot.
dpkg-query -W -f='gpu_package=${db:Status-Abbrev}|${Package}|${Version}\n' \
  'nvidia-driver-*' 'nvidia-fabricmanager-*' 'cuda-toolkit-[0-9]*' 2>/dev/null
echo "rdma_devices=$(ls /sys/class/infiniband 2>/dev/null | tr '\n' ' ')"
"""

#: Facts compared between runs. Everything here is stable across reboots; a
#: difference means the host was changed (or replaced) underneath the stack.
FACT_KEYS = (
    "hostname",
    "machine_id",
    "kernel",
    "arch",
    "os",
    "cpus",
    "memory_gib",
    "gpus",
    "gpu_model",
    "gpu_driver",
    "nccl",
    "gpu_driver_installed",
    "fabricmanager",
    "cuda",
    "rdma_devices",
)

# dpkg package name prefix -> the fact its installed upstream version becomes.
_GPU_PACKAGES = (
    ("nvidia-driver-", "gpu_driver_installed"),
    ("nvidia-fabricmanager-", "fabricmanager"),
    ("cuda-toolkit-", "cuda"),
)

_GIB_IN_KIB = 1024 * 1024


def int_or_none(value: str | None) -> int | None:
    """An integer fact, or None where it is absent or not a number."""
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _nccl_version(value: str | None) -> str | None:
    # dpkg says "2.21.5-1+cuda12.4", the library file name "2.21.5".
    return (_upstream(value.strip()) or None) if value else None


def _upstream(version: str) -> str:
    """`1:4.2.3-1` -> `4.2.3`: the release, without epoch or packaging revision."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def installed_gpu_packages(lines: list[str]) -> dict[str, str | None]:
    """The installed driver, fabric manager and CUDA toolkit from `gpu_package=` lines
    (`<dpkg status>|<package>|<version>`); only installed ones count (`ii`, or `hi`:
    installed and held, as the GPU roles leave them).
    Two different installed versions of one (two driver branches) read as both, joined."""
    found: dict[str, set[str]] = {fact: set() for _, fact in _GPU_PACKAGES}
    for line in lines:
        status, _, rest = line.partition("|")
        package, _, version = rest.partition("|")
        if status[1:2] != "i" or not version:
            continue
        for prefix, fact in _GPU_PACKAGES:
            if package.startswith(prefix):
                found[fact].add(_upstream(version.strip()))
    return {fact: ",".join(sorted(v)) or None for fact, v in found.items()}


def parse_facts(text: str) -> dict[str, Any]:
    """Facts from the `key=value` lines FACTS_COMMAND prints; absent ones are None."""
    raw: dict[str, str] = {}
    packages: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if key.strip() == "gpu_package":
            packages.append(value.strip())
        elif sep:
            raw[key.strip()] = value.strip()
    memory_kib = int_or_none(raw.get("memory_kib"))
    return {
        "hostname": raw.get("hostname") or None,
        "machine_id": raw.get("machine_id") or None,
        "kernel": raw.get("kernel") or None,
        "arch": raw.get("arch") or None,
        "os": raw.get("os") or None,
        "cpus": int_or_none(raw.get("cpus")),
        "memory_gib": round(memory_kib / _GIB_IN_KIB) if memory_kib else None,
        # No nvidia-smi: GPUs unknown (None), not zero; nvidia-smi with none: 0.
        "gpus": int_or_none(raw.get("gpus")),
        "gpu_model": raw.get("gpu_model") or None,
        "gpu_driver": raw.get("gpu_driver") or None,
        "nccl": _nccl_version(raw.get("nccl")),
        **installed_gpu_packages(packages),
        "rdma_devices": sorted(raw.get("rdma_devices", "").split()),
    }


def changed_facts(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Names of the facts that differ (all of them when nothing was recorded)."""
    old = old or {}
    return [key for key in FACT_KEYS if old.get(key) != new.get(key)]


@dataclass(frozen=True)
class HostAccess:
    """How to log in to one host for preflight."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    private_key: str | None = field(default=None, repr=False)
    """The key itself (a Pulumi secret); written to a private file only while in use."""
    private_key_path: str | None = None
    known_hosts: str | None = None
    """known_hosts lines or a file path; host keys are always verified."""

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> HostAccess:
        """From a Preflight resource's properties (see `host_props`)."""
        return cls(
            name=props["host"],
            address=props["address"],
            user=props.get("user") or "root",
            port=int(props.get("port") or 22),
            private_key=props.get("privateKey"),
            private_key_path=props.get("privateKeyPath"),
            known_hosts=props.get("knownHosts"),
        )


def gather(access: HostAccess, timeout: float = 30) -> dict[str, Any]:
    """Log in (host key verified) and read the host's facts; KilnError if that fails."""
    with private_dir() as directory:
        if access.private_key:
            key = write_private(directory, "key", access.private_key)
        elif access.private_key_path:
            key = Path(access.private_key_path).expanduser()
        else:
            raise UsageError(
                f"{access.name}: no SSH key to log in with: set its pool's ssh.privateKey "
                "(pulumi up) or ssh.privateKeyPath (the CLI)"
            )
        known = known_hosts_path(access.known_hosts, directory, "known_hosts")
        target = ssh.SshTarget(access.name, access.address, access.user, key, known, access.port)
        with ssh.connect(target, timeout=timeout) as client:
            result = ssh.run(client, FACTS_COMMAND, timeout=timeout)
    if result.exit_code != 0 or "hostname=" not in result.stdout:
        raise KilnError(f"{access.name} ({access.address}): preflight failed: {result.describe()}")
    return parse_facts(result.stdout)


def access_of(target: ssh.SshTarget) -> HostAccess:
    """Preflight access through an SSH target the CLI resolved (key and known_hosts files)."""
    return HostAccess(
        target.name,
        target.address,
        target.user,
        target.port,
        private_key_path=str(target.key_file),
        known_hosts=str(target.known_hosts),
    )


@dataclass
class HostChange:
    """What a Preflight diff found for one host."""

    replaces: list[str] = field(default_factory=list)
    """Inputs whose change makes it a different machine (its address)."""
    settings: list[str] = field(default_factory=list)
    """Login settings that changed (user, port, key file, known_hosts)."""
    facts: list[str] = field(default_factory=list)
    """Facts that differ from the recorded ones."""
    unreachable: str | None = None
    """Why the host could not be probed; its update will fail with the same error."""

    @property
    def changed(self) -> bool:
        return bool(self.replaces or self.settings or self.facts or self.unreachable)


# The key itself is left out: a rotated key reaches the same machine, and the
# recorded state never holds it (it would have to be kept as a secret).
_LOGIN_KEYS = ("user", "port", "privateKeyPath", "knownHosts")


def diff_host(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    probe: Callable[[HostAccess], dict[str, Any]] = gather,
) -> HostChange:
    """Compare recorded state (`olds`) with the stack (`news`) and, if same, with the host now."""
    change = HostChange()
    if olds.get("address") != news.get("address"):
        change.replaces.append("address")
        return change  # a new machine: nothing to compare against
    change.settings = [key for key in _LOGIN_KEYS if olds.get(key) != news.get(key)]
    try:
        current = probe(HostAccess.from_props(news))
    except KilnError as exc:
        change.unreachable = str(exc)
        return change
    change.facts = changed_facts(olds.get("facts"), current)
    return change
