"""Certification preflight: every host's facts over SSH in parallel, and the measurements
rules read from them.

Two kinds of fact. Identity facts (`kiln.preflight.FACT_KEYS`: kernel, driver,
NCCL, RDMA devices …) are the ones the Pulumi Preflight resource compares to
decide re-provisioning. State facts (`STATE_KEYS`: RDMA port state, whether
the shared filesystem is mounted, the Slurm node state, the Prometheus target)
change from run to run without anything being re-installed; they feed rules
here and never the provisioning diff.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kiln import preflight, role_defaults, ssh
from kiln.config import Cluster, GpuSettings

#: Facts that change from run to run; never part of the identity facts.
STATE_KEYS = (
    "torch", "transformers", "rdma_ports", "rdma_setup", "shared_fs", "slurm_state",
    "prometheus_target", "peermem", "dcgm_diag",
)  # fmt: skip

# POSIX sh, appended to kiln.preflight.FACTS_COMMAND. {mount} and {runtime} are
# shell-quoted. torch's and transformers' versions are read from their installed
# metadata: importing them on every node would cost seconds per host.
_STATE_COMMAND = r"""
for package in torch transformers; do
  for d in {runtime}/lib/python3*/site-packages/"$package"-*.dist-info; do
    [ -d "$d" ] && echo "$package=$(basename "$d" .dist-info | cut -d- -f2)"
  done
done
for p in /sys/class/infiniband/*/ports/*; do
  [ -d "$p" ] || continue
  dev=$(basename "$(dirname "$(dirname "$p")")")
  port=$(basename "$p")
  # Active MTU: ibv_devinfo where rdma-core's tools are installed, else the
  # RoCE netdev's MTU.
  mtu=$(ibv_devinfo -d "$dev" -i "$port" 2>/dev/null | awk '/active_mtu/ {{print $2; exit}}')
  [ -n "$mtu" ] || mtu=$(cat /sys/class/infiniband/"$dev"/device/net/*/mtu 2>/dev/null | head -n 1)
  echo "rdma_port=$dev/$port $(cut -d' ' -f2 "$p/state" 2>/dev/null)" \
    "$(cut -d' ' -f1 "$p/rate" 2>/dev/null)Gbps $(cat "$p/link_layer" 2>/dev/null) ${{mtu:-?}}"
done
# GPUDirect RDMA: the peer-memory module NCCL needs to DMA between NIC and GPU.
for m in nvidia_peermem nv_peer_mem; do
  grep -q "^$m " /proc/modules 2>/dev/null && echo "peermem=$m"
done
# DCGM's quick diagnostic (deployment and software checks), where DCGM is installed
# and a GPU answers; its exit status is the verdict, its failing lines the detail.
if [ {diag} = 1 ] && command -v dcgmi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  out=$(timeout 45 dcgmi diag -r 1 2>&1); rc=$?
  failing=$(printf '%s\n' "$out" | grep -i 'fail' | tr -s ' |' ' ' | head -n 5 | tr '\n' ';')
  echo "dcgm_diag=$rc $failing"
fi
if [ -n {mount} ]; then
  fs=$(findmnt -n -o FSTYPE --mountpoint {mount} 2>/dev/null)
  echo "shared_fs=${{fs:-none}}"
fi
"""

# On the controller: Slurm's view of each node and Prometheus' view of each target.
_SLURM_COMMAND = "sinfo -h -N -o '%N %t' 2>/dev/null || true"
# Prometheus listens on the controller's management address, maybe with TLS and basic
# auth: the prometheus role says where and how in a client file (no secret in it; the
# password file it names is root's to read, hence sudo for another user).
_PROMETHEUS_QUERY = """
import base64, json, ssl, sys, urllib.request
try:
    with open({client!r}) as f:
        c = json.load(f)
except FileNotFoundError:
    c = {{"url": "http://127.0.0.1:{port}"}}
r = urllib.request.Request(c["url"] + "/api/v1/targets?state=active")
if c.get("password_file"):
    with open(c["password_file"]) as f:
        login = c["user"] + ":" + f.read().strip()
    r.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
x = ssl.create_default_context(cafile=c.get("ca_file")) if c["url"].startswith("https") else None
sys.stdout.write(urllib.request.urlopen(r, timeout=10, context=x).read().decode())
"""


def _prometheus_command(port: int) -> str:
    code = _PROMETHEUS_QUERY.format(client=role_defaults.prometheus_client_file(), port=port)
    return f'$([ "$(id -u)" = 0 ] || echo sudo -n) python3 -c {shlex.quote(code)}'


#: Slurm states (`sinfo %t`) in which a node can run a certification job.
SLURM_READY = ("idle", "mix", "alloc", "comp")


@dataclass(frozen=True)
class HostFacts:
    """One host's preflight outcome."""

    name: str
    facts: dict[str, Any] | None
    error: str | None = None


def state_command(cluster: Cluster, venv: str) -> str:
    """The state facts command for `cluster`, reading torch from the runtime's `venv`."""
    mount = cluster.storage.mount_point if cluster.storage.kind != "none" else ""
    diag = int(dcgm_diag_wanted(cluster))
    return _STATE_COMMAND.format(mount=shlex.quote(mount), runtime=shlex.quote(venv), diag=diag)


def dcgm_diag_wanted(cluster: Cluster) -> bool:
    """Whether preflight runs `dcgmi diag -r 1`: GPU pools whose stack installs DCGM."""
    return cluster.monitoring.dcgm_exporter and any(p.gpu for p in cluster.node_pools)


def parse_state(text: str) -> dict[str, Any]:
    """State facts from the `key=value` lines of the state command."""
    out: dict[str, Any] = {
        "torch": None, "transformers": None, "rdma_ports": [], "shared_fs": None,
        "peermem": None, "dcgm_diag": None,
    }  # fmt: skip
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if key in ("torch", "transformers"):
            out[key] = value or None
        elif key == "rdma_port":
            name, _, rest = value.partition(" ")
            state, rate, layer, mtu = (rest.split() + ["", "", "", ""])[:4]
            out["rdma_ports"].append(
                {"port": name, "state": state, "rate": rate, "layer": layer, "mtu": mtu}
            )
        elif key == "shared_fs":
            out["shared_fs"] = value or None
        elif key == "peermem":
            out["peermem"] = value or None
        elif key == "dcgm_diag":
            code, _, failing = value.partition(" ")
            out["dcgm_diag"] = {"exit": preflight.int_or_none(code), "failing": failing.strip(" ;")}
    # What homogeneity compares about RDMA: each port's rate, link layer and MTU
    # (its up/down state is judged on its own, by preflight.rdma-ports).
    out["rdma_setup"] = [
        f"{p['port']} {p['rate']} {p['layer']} mtu {p['mtu']}" for p in out["rdma_ports"]
    ]
    return out


def gather_host(target: ssh.SshTarget, command: str, timeout: float) -> HostFacts:
    """Log in (host key verified), run the facts and state commands, parse both."""
    try:
        with ssh.connect(target, timeout=timeout) as client:
            result = ssh.run(client, preflight.FACTS_COMMAND + command, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to reach a host is reported by name
        said = str(exc) or type(exc).__name__
        if not said.startswith(f"{target.name} "):
            said = f"{target.name} ({target.address}): {said}"
        return HostFacts(target.name, None, said)
    if result.exit_code != 0 or "hostname=" not in result.stdout:
        why = f"facts command failed: {result.describe()}"
        return HostFacts(target.name, None, f"{target.name} ({target.address}): {why}")
    return HostFacts(
        target.name, {**preflight.parse_facts(result.stdout), **parse_state(result.stdout)}
    )


def controller_views(
    target: ssh.SshTarget,
    cluster: Cluster,
    prometheus_port: int,
    timeout: float,
    scrape_wait_s: float = 60.0,
) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(Slurm state by node, Prometheus target health by node, error) from the controller.

    Right after provisioning Prometheus may not have scraped every target yet
    (health `unknown`, or no targets while it starts): wait up to
    `scrape_wait_s`, a few scrape intervals, for every host's first scrape
    rather than report a healthy target as missing."""
    slurm: dict[str, str] = {}
    targets: dict[str, str] = {}
    expected = {h.name for h in cluster.hosts}
    try:
        with ssh.connect(target, timeout=timeout) as client:
            if cluster.scheduler == "slurm":
                for line in ssh.run(client, _SLURM_COMMAND, timeout=timeout).stdout.splitlines():
                    node, _, state = line.partition(" ")
                    if node:
                        slurm[node] = state.strip()
            if cluster.monitoring.prometheus and cluster.monitoring.node_exporter:
                query = _prometheus_command(prometheus_port)
                deadline = time.monotonic() + scrape_wait_s
                while True:
                    targets = _node_targets(ssh.run(client, query, timeout=timeout).stdout)
                    scraped = {n for n, health in targets.items() if health != "unknown"}
                    if expected <= scraped or time.monotonic() > deadline:
                        break
                    time.sleep(3)
    except Exception as exc:  # noqa: BLE001 - reported, and the rules then fail closed
        return slurm, targets, f"{target.name}: {exc}"
    return slurm, targets, None


def _node_targets(body: str) -> dict[str, str]:
    try:
        active = json.loads(body)["data"]["activeTargets"]
    except (ValueError, KeyError, TypeError):
        return {}
    out = {}
    for t in active:
        labels = t.get("labels", {})
        if labels.get("job") == "node":
            out[labels.get("node", labels.get("instance", ""))] = t.get("health", "unknown")
    return out


def gather_all(
    targets: Mapping[str, ssh.SshTarget],
    command: str,
    timeout: float,
    gather: Callable[[ssh.SshTarget, str, float], HostFacts] = gather_host,
) -> dict[str, HostFacts]:
    """Every host at once (bounded pool), in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(targets)))) as pool:
        futures = {name: pool.submit(gather, t, command, timeout) for name, t in targets.items()}
        return {name: future.result() for name, future in futures.items()}


def measurements(
    cluster: Cluster,
    facts: Mapping[str, Mapping[str, Any]],
    slurm: Mapping[str, str],
    targets: Mapping[str, str],
) -> list[dict[str, Any]]:
    """What preflight rules read, per host. A fact that could not be read yields a
    measurement with value None (its rule then fails closed)."""
    out: list[dict[str, Any]] = []
    evidence = "evidence/preflight.json"

    def add(name: str, subject: str, value: Any, detail: str = "") -> None:
        out.append(
            {
                "name": name,
                "subject": subject,
                "value": value,
                "unit": "",
                "detail": detail,
                "evidence": evidence,
            }
        )

    pools = {h.name: p for p in cluster.node_pools for h in p.hosts}
    for host in cluster.hosts:
        f = facts.get(host.name)
        if f is None:
            continue
        # Every benchmark needs torch; the training benchmark (models) also transformers.
        missing = [p for p in ("torch", "transformers") if f.get(p) is None]
        add(
            "preflight.runtime_ready",
            host.name,
            not missing,
            f"no {' or '.join(missing)} in the validation runtime"
            if missing
            else f"torch {f['torch']}, transformers {f['transformers']}",
        )
        if cluster.storage.kind != "none":
            fs = f.get("shared_fs")
            add(
                "preflight.shared_fs_mounted",
                host.name,
                fs not in (None, "none"),
                f"{cluster.storage.mount_point}: {fs or 'not mounted'}",
            )
        ports = f.get("rdma_ports") or []
        if pools[host.name].rdma.fabric != "none":
            down = [p["port"] for p in ports if p.get("state") != "ACTIVE"]
            add(
                "preflight.rdma_ports_active",
                host.name,
                bool(ports) and not down,
                f"not active: {', '.join(down)}" if down else f"{len(ports)} port(s) active",
            )
        gpu = pools[host.name].gpu
        if gpu and "compute" in host.roles:
            seen = f.get("gpus")
            add(
                "preflight.gpus_as_configured",
                host.name,
                seen == gpu.per_node if seen is not None else None,
                f"{seen} of {gpu.per_node} {gpu.model}" if seen is not None else "no nvidia-smi",
            )
        if gpu and "compute" in host.roles:
            _gpu_stack(add, host.name, f, gpu, pools[host.name].rdma.fabric)
            if dcgm_diag_wanted(cluster):
                diag = f.get("dcgm_diag")
                failing = f": {diag['failing']}" if diag and diag["failing"] else ""
                add(
                    "preflight.dcgm_diag_passed",
                    host.name,
                    None if diag is None or diag["exit"] is None else diag["exit"] == 0,
                    "dcgmi diag -r 1 did not run (no dcgmi, or nvidia-smi sees no GPU)"
                    if diag is None
                    else f"exit {diag['exit']}{failing}",
                )
        if cluster.scheduler == "slurm" and "compute" in host.roles:
            state = slurm.get(host.name)
            add(
                "preflight.slurm_node_ready",
                host.name,
                None if state is None else state in SLURM_READY,
                f"sinfo: {state}" if state else "not in sinfo",
            )
        if cluster.monitoring.prometheus and cluster.monitoring.node_exporter:
            health = targets.get(host.name)
            add(
                "preflight.prometheus_target_up",
                host.name,
                None if health is None else health == "up",
                f"node_exporter target {health or 'not scraped'}",
            )
    return out


def _gpu_stack(
    add: Callable[..., None], host: str, facts: Mapping[str, Any], gpu: GpuSettings, fabric: str
) -> None:
    """Measurements of a GPU host's driver stack against its pool's pins.

    Installed versions come from dpkg (a host without a GPU has them too); the
    loaded driver from /proc, which differs from the installed one until a reboot."""
    installed = facts.get("gpu_driver_installed")
    wrong = []
    for what, have, want in (
        ("driver", installed, gpu.driver),
        ("NCCL", facts.get("nccl"), gpu.nccl),
        ("CUDA toolkit", facts.get("cuda"), gpu.cuda),
        # Fabric manager runs only beside exactly its own driver version.
        ("fabric manager", facts.get("fabricmanager"), gpu.driver if gpu.fabric_manager else None),
    ):
        if want is None:
            continue
        if have is None:
            wrong.append(f"{what} not installed (pinned {want})")
        elif not (have == want or have.startswith(want + ".")):
            wrong.append(f"{what} {have}, pinned {want}")
    add(
        "preflight.gpu_stack_as_pinned",
        host,
        not wrong,
        "; ".join(wrong) or f"driver {installed}, NCCL {facts.get('nccl')}",
    )
    loaded = facts.get("gpu_driver")
    add(
        "preflight.gpu_driver_loaded",
        host,
        None if loaded is None else loaded == installed,
        "no NVIDIA driver loaded (/proc/driver/nvidia/version)"
        if loaded is None
        else f"loaded {loaded}, installed {installed}"
        + ("" if loaded == installed else ": reboot to run the installed driver"),
    )
    module = facts.get("peermem")
    add(
        "preflight.gpudirect_loaded",
        host,
        fabric == "none" or module is not None,
        "the pool has no RDMA fabric: GPUDirect RDMA is not used"
        if fabric == "none"
        else f"{module} loaded"
        if module
        else "neither nvidia_peermem nor nv_peer_mem is loaded: NCCL stages RDMA through "
        "host memory",
    )
