"""Bring a stack's lab pools up as real local machines, report on them, tear them down.

`up` and `down` are idempotent and report whether they changed anything.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kiln import ssh
from kiln.config import Cluster, Host
from kiln.errors import KilnError, UsageError
from kiln.lab import keys, network, node, wheelhouse
from kiln.lab.layout import LabLayout, NodePaths
from kiln.lab.rootfs import Recipe, ensure_rootfs, host_mirror

Report = Callable[[str], None]
_REQUIRED_TOOLS = ("debootstrap", "systemd-nspawn", "ip", "iptables", "mount")
_BOOT_DEADLINE_S = 120


@dataclass
class NodeStatus:
    """What `kiln lab status` shows for one node."""

    name: str
    address: str
    roles: list[str]
    netns: bool = False
    running: bool = False
    ssh: bool = False
    systemd: str = "-"


@dataclass
class Outcome:
    """What an `up` or `down` did: one line per change, nothing when nothing changed."""

    changes: list[str] = field(default_factory=list)
    nodes: list[NodeStatus] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def role_overrides() -> dict[str, object]:
    """Role variables lab nodes need because they share this host's kernel and limits.

    A node cannot raise its hard limits above the host's (nspawn has no
    CAP_SYS_RESOURCE to give), so the base role asks for exactly what the host
    allows instead of "unlimited", and the result is still checkable.
    """
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return {
        # Mounted read-only into every node by `lab up` (kiln/lab/wheelhouse.py).
        "validation_runtime_wheelhouse": wheelhouse.NODE_PATH,
        # Mounted writable into every node: a venv built once is unpacked by the rest.
        "validation_runtime_venv_archives": wheelhouse.ARCHIVES_NODE_PATH,
        # Byte-compiling torch and transformers at install is 32 of the 40 s a node
        # spends installing them; lab nodes run the suite as root, so what is
        # imported is compiled (and cached) on first use instead.
        "validation_runtime_pip_compile": False,
        "base_memlock": "unlimited" if memlock == resource.RLIM_INFINITY else str(memlock // 1024),
        "base_nofile": 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576),
        # A node sees the host's cgroup v1 controllers read-only (nspawn on a host
        # whose PID 1 is not systemd delegates none), so slurmd cannot put jobs in
        # cgroups there: track them by process tree and leave CPU binding alone.
        "slurm_proctrack_type": "proctrack/linuxproc",
        "slurm_task_plugin": "task/none",
    }


class Lab:
    """The lab machines of one stack (its `provider: lab` pools)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.settings = cluster.lab_settings
        self.layout = LabLayout(self.settings.id)
        self.hosts: list[Host] = [h for p in cluster.lab_pools for h in p.hosts]
        self.user = "root"

    # -- inspection --------------------------------------------------------------

    def targets(self) -> list[ssh.SshTarget]:
        """How to reach each lab node over SSH (the lab's own key and known_hosts)."""
        return [
            ssh.SshTarget(
                h.name, str(h.address), self.user, self.layout.private_key, self.layout.known_hosts
            )
            for h in self.hosts
        ]

    def status(self) -> list[NodeStatus]:
        namespaces = set(network.namespaces())
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda h: self._node_status(h, namespaces), self.hosts))

    def _node_status(self, host: Host, namespaces: set[str]) -> NodeStatus:
        status = NodeStatus(host.name, str(host.address), list(host.roles))
        status.netns = self.layout.netns(host.name) in namespaces
        status.running = node.nspawn_pid(self._paths(host.name)) is not None
        if status.running and self.layout.known_hosts.is_file():
            target = next(t for t in self.targets() if t.name == host.name)
            try:
                client = ssh.connect(target, timeout=5)
            except KilnError:
                return status
            with client:
                status.ssh = True
                result = ssh.run(client, "systemctl is-system-running", timeout=10)
                status.systemd = result.stdout.strip() or "unknown"
        return status

    # -- up ----------------------------------------------------------------------

    def preflight(self) -> None:
        """Everything that must hold before the lab changes anything on this host."""
        if not self.hosts:
            raise UsageError("the stack has no pool with provider: lab")
        self.preflight_host()
        by_link: dict[str, str] = {}
        for host in self.hosts:
            link = self.layout.veth(host.name)
            if link in by_link:
                raise UsageError(
                    f"lab nodes {by_link[link]!r} and {host.name!r} would share the host "
                    f"link name {link} (link names hold 5 hex digits of a hash of the node "
                    "name): rename one"
                )
            by_link[link] = host.name
        network.check_subnet_free(self.layout, self.settings.subnet)

    def preflight_host(self) -> None:
        """This host can run lab machines: Linux, root, the tools installed."""
        if not sys.platform.startswith("linux"):
            raise UsageError(f"lab pools need a Linux host (this is {sys.platform})")
        if os.geteuid() != 0:
            raise UsageError("lab pools need root (namespaces, bridges, mounts): run as root")
        missing = [t for t in _REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise UsageError(
                f"missing host tools: {', '.join(missing)} (run scripts/setup to install them)"
            )

    def up(self, report: Report = lambda _: None) -> Outcome:
        self.preflight()
        outcome = Outcome()
        subnet, gateway = self.settings.subnet, self.settings.gateway

        def step(changed: bool, message: str) -> None:
            if changed:
                outcome.changes.append(message)
                report(message)

        recipe = Recipe(suite=self.settings.suite, mirror=self.settings.mirror or host_mirror())
        rootfs, built = ensure_rootfs(recipe, report)
        step(built, f"built root filesystem {recipe.key}")
        report("network: bridge, NAT")
        step(network.ensure_ip_forward(), "enabled IPv4 forwarding")
        step(
            network.ensure_bridge(self.layout, gateway, subnet.prefixlen),
            f"bridge {self.layout.bridge} at {gateway}",
        )
        step(network.ensure_nat(self.layout, subnet), f"NAT for {subnet}")
        authorized = keys.ensure_client_key(self.layout.private_key, self.settings.id)

        for stale in sorted(self._nodes_on_disk() - {h.name for h in self.hosts}):
            report(f"removing {stale}: no longer in the stack")
            self._destroy_node(stale)
            step(True, f"removed node {stale}")

        wheels, built = wheelhouse.ensure_wheelhouse()
        step(built, f"built validation wheelhouse {wheels.name}")
        peers = tuple((h.name, h.address) for h in self.hosts)
        binds = ((wheels, wheelhouse.NODE_PATH),)
        shared = ((wheelhouse.venv_archives(), wheelhouse.ARCHIVES_NODE_PATH),)
        for host in self.hosts:
            paths = self._paths(host.name)
            paths.base.mkdir(parents=True, exist_ok=True)
            spec = node.NodeSpec(
                host.name, host.address, self.layout.netns(host.name), peers, binds, shared
            )
            step(
                network.ensure_node_link(
                    self.layout, host.name, host.address, gateway, subnet.prefixlen
                ),
                f"{host.name}: network {host.address}",
            )
            step(node.ensure_overlay(paths, rootfs), f"{host.name}: root filesystem mounted")
            step(
                node.write_identity(paths, spec, authorized) is not None,
                f"{host.name}: host key created",
            )
            running = node.running_args(paths)
            if running is not None and running != node.nspawn_args(paths, spec):
                report(f"rebooting {host.name}: its boot settings changed")
                node.stop(paths)
                running = None
                step(True, f"{host.name}: boot settings changed")
            if running is None:
                report(f"booting {host.name}")
                node.boot(paths, spec)
                step(True, f"{host.name}: booted")
        self._write_ssh_client_files()
        report("waiting for systemd and SSH on every node")
        self._wait_ready()
        outcome.nodes = self.status()
        return outcome

    def _wait_ready(self) -> None:
        def ready(target: ssh.SshTarget) -> None:
            with ssh.wait_until_reachable(target, _BOOT_DEADLINE_S) as client:
                state = ssh.run(
                    client, "systemctl is-system-running --wait", timeout=_BOOT_DEADLINE_S
                ).stdout.strip()
                if state not in ("running", "degraded"):
                    raise KilnError(f"{target.name}: systemd is {state!r} after boot")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(ready, self.targets()))

    def _write_ssh_client_files(self) -> None:
        """known_hosts with each node's generated key, and an ssh_config naming the nodes."""
        known = []
        for host in self.hosts:
            key = node.host_public_key(self._paths(host.name)).split()
            known.append(f"{host.address},{host.name} {key[0]} {key[1]}")
        self.layout.known_hosts.write_text("\n".join(known) + "\n")
        self.layout.ssh_config.write_text(ssh.ssh_config(self.targets()))

    # -- down --------------------------------------------------------------------

    def down(self, report: Report = lambda _: None) -> Outcome:
        """Remove every machine, namespace, link, rule and mount of this lab id."""
        return teardown(self.layout, report)

    def _destroy_node(self, name: str) -> None:
        paths = self._paths(name)
        node.stop(paths)
        node.unmount(paths)
        network.remove_node_link(self.layout, name)
        shutil.rmtree(paths.base, ignore_errors=True)

    def _nodes_on_disk(self) -> set[str]:
        nodes_dir = self.layout.nodes_dir
        return {p.name for p in nodes_dir.iterdir()} if nodes_dir.is_dir() else set()

    def _paths(self, name: str) -> NodePaths:
        return NodePaths(self.layout.node_dir(name))


def teardown(layout: LabLayout, report: Report = lambda _: None) -> Outcome:
    """Remove everything a lab with this id created, found by its tags, not by config.

    Works after a crash or a config change, and is what clears leftovers that a
    previous session's processes left behind on the machine.
    """
    outcome = Outcome()
    nodes = sorted(p for p in layout.nodes_dir.iterdir()) if layout.nodes_dir.is_dir() else []
    for base in nodes:
        paths = NodePaths(base)
        if node.stop(paths):
            outcome.changes.append(f"stopped {base.name}")
            report(f"stopped {base.name}")
    for pid in _stray_nspawns(layout):
        node.stop_pid(pid)
        outcome.changes.append(f"stopped stray nspawn {pid}")
    for mount in _mounts_under(layout.directory):
        node.unmount_path(mount)
        outcome.changes.append(f"unmounted {mount}")
    if network.remove_lab_links(layout):
        outcome.changes.append("removed namespaces and links")
    if network.remove_rules(layout):
        outcome.changes.append("removed iptables rules")
    if layout.directory.exists():
        shutil.rmtree(layout.directory)
        outcome.changes.append(f"removed {layout.directory}")
    network.restore_ip_forward_if_last()
    return outcome


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        found = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    return sorted(found, key=len, reverse=True)  # innermost first


def _stray_nspawns(layout: LabLayout) -> list[int]:
    """nspawn processes running one of this lab's node roots whose pid file is gone."""
    marker = f"--directory={layout.nodes_dir}/".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"systemd-nspawn")
            and any(arg.startswith(marker) for arg in cmdline)
        ):
            found.append(int(proc.name))
    return found
