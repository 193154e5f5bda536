"""One lab node: an overlay of the cached rootfs, its identity, and its nspawn process."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError
from kiln.hostcmd import run
from kiln.lab import keys
from kiln.lab.layout import NodePaths

_STOP_GRACE_S = 30


@dataclass(frozen=True)
class NodeSpec:
    """What a node must look like: name, address, peers for /etc/hosts."""

    name: str
    address: ipaddress.IPv4Address
    netns: str
    peers: tuple[tuple[str, ipaddress.IPv4Address], ...]
    # (host path, node path) pairs mounted read-only, e.g. the validation wheelhouse.
    read_only_binds: tuple[tuple[Path, str], ...] = ()
    # (host path, node path) pairs every node of the lab writes, e.g. the venv archives.
    shared_binds: tuple[tuple[Path, str], ...] = ()


def mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def ensure_overlay(paths: NodePaths, rootfs: Path) -> bool:
    """Mount the node's private copy-on-write view of the shared rootfs."""
    if mounted(paths.root):
        return False
    for directory in (paths.upper, paths.work, paths.root):
        directory.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={rootfs},upperdir={paths.upper},workdir={paths.work}",
            str(paths.root),
        ]
    )
    return True


def write_identity(paths: NodePaths, spec: NodeSpec, authorized_key: str) -> str | None:
    """Hostname, hosts, machine-id, SSH keys, resolver. Returns a new host key, if made.

    Written once: a node keeps its host key and machine-id across reboots,
    exactly like a real machine.
    """
    root = paths.root
    _write(root / "etc/hostname", f"{spec.name}\n")
    hosts = ["127.0.0.1\tlocalhost", f"{spec.address}\t{spec.name}"]
    hosts += [f"{addr}\t{name}" for name, addr in spec.peers if name != spec.name]
    _write(root / "etc/hosts", "\n".join(hosts) + "\n")
    if not (root / "etc/machine-id").read_text().strip():
        _write(root / "etc/machine-id", uuid.uuid4().hex + "\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _write(ssh_dir / "authorized_keys", authorized_key + "\n", mode=0o600)
    # Only the key Kiln generated: sshd must not look for ones the image lacks.
    _write(
        root / "etc/ssh/sshd_config.d/kiln.conf",
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\n",
    )
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    _write(resolv, Path("/etc/resolv.conf").read_text())
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    if host_key.is_file():
        return None
    pair = keys.generate(f"root@{spec.name}")
    keys.write_key_pair(host_key, pair)
    return pair.public


def host_public_key(paths: NodePaths) -> str:
    return (paths.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip()


def nspawn_pid(paths: NodePaths) -> int | None:
    """PID of this node's running nspawn, or None (a stale pid file is not trusted)."""
    args = running_args(paths)
    return int(paths.pid_file.read_text()) if args else None


def running_args(paths: NodePaths) -> list[str] | None:
    """The command line of this node's running nspawn, or None when it is not running."""
    try:
        pid = int(paths.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except (OSError, ValueError):
        return None
    if cmdline and cmdline[0].endswith("systemd-nspawn") and f"--directory={paths.root}" in cmdline:
        return cmdline
    return None


def nspawn_args(paths: NodePaths, spec: NodeSpec) -> list[str]:
    """How this node is booted; a running node started differently is rebooted by `lab up`."""
    args = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        # Both are required on hosts whose PID 1 is not systemd: without them
        # nspawn tries to register with machined over a system bus that is absent.
        "--register=no",
        "--keep-unit",
        f"--directory={paths.root}",
        f"--machine={spec.name}",
        f"--network-namespace-path=/run/netns/{spec.netns}",
        "--console=read-only",
    ]
    if Path("/dev/fuse").exists():
        args.append("--bind=/dev/fuse")  # GlusterFS and other FUSE mounts
    args += [f"--bind-ro={host}:{inside}" for host, inside in spec.read_only_binds]
    args += [f"--bind={host}:{inside}" for host, inside in spec.shared_binds]
    return args


def boot(paths: NodePaths, spec: NodeSpec) -> int:
    """Start systemd in the node's namespace; returns the nspawn PID."""
    kill_orphans(paths)
    args = nspawn_args(paths, spec)
    # Its own session: the node outlives the `kiln` command that started it.
    with open(paths.console_log, "ab") as log:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            # The node owns its network namespace, so it may tune it: roles set
            # net.* sysctls (socket buffers) there as on a real host.
            env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
        )
    paths.pid_file.write_text(f"{proc.pid}\n")
    time.sleep(0.5)
    if proc.poll() is not None:
        tail = paths.console_log.read_text(errors="replace").strip().splitlines()[-3:]
        raise KilnError(f"node {spec.name}: systemd-nspawn exited at once: {' | '.join(tail)}")
    return proc.pid


def stop(paths: NodePaths) -> bool:
    """Power the node off cleanly; returns whether it was running."""
    pid = nspawn_pid(paths)
    if pid is not None:
        stop_pid(pid)
    paths.pid_file.unlink(missing_ok=True)
    orphans = kill_orphans(paths)
    return pid is not None or orphans


def kill_orphans(paths: NodePaths) -> bool:
    """Kill processes still rooted in the node's filesystem after its nspawn died.

    A killed session can take nspawn with it yet leave the container's
    processes behind; booting a second systemd on the same root, or
    unmounting under them, would go wrong.
    """
    root = str(paths.root)
    try:
        # A container's processes live in their own mount namespace, where their root
        # reads as "/": the directory itself (device and inode) is what identifies it.
        here = os.stat(paths.root)
    except OSError:
        return False
    identity = (here.st_dev, here.st_ino)
    victims = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            with contextlib.suppress(OSError):
                seen = os.stat(proc / "root")
                if (seen.st_dev, seen.st_ino) == identity or os.readlink(proc / "root") == root:
                    victims.append(int(proc.name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in victims:
        _wait_gone(pid, 10)
    return bool(victims)


def stop_pid(pid: int) -> None:
    """SIGTERM makes nspawn power the container off; SIGKILL the group if it hangs."""
    try:
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, _STOP_GRACE_S):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            _wait_gone(pid, 10)
    except ProcessLookupError:
        pass


def unmount(paths: NodePaths) -> bool:
    if not mounted(paths.root):
        return False
    unmount_path(str(paths.root))
    return True


def unmount_path(path: str) -> None:
    if run(["umount", path], check=False).returncode == 0 or not is_mounted(path):
        return  # unmounted, or gone meanwhile (a node still exiting unmounts its own root)
    # Lazy as a fallback: a shell left inside must not block tearing the lab down.
    run(["umount", "--lazy", path])


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == path for line in mounts)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Reap it if it is our child; otherwise just probe.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.2)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == content:
        return
    path.write_text(content)
    path.chmod(mode)
