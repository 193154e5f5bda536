"""Which SSH host keys Kiln trusts for each static pool, and what it learnt on first contact.

Two policies (`ssh.hostKeyPolicy`):

- `strict` (the default): a host is reached only when its key is in the pool's
  `knownHosts` (lines in the stack, or a file). Nothing is ever learnt.
- `trust-on-first-use`: a host with no key in `knownHosts` has the key it
  presents on first contact recorded in Kiln's state, said by fingerprint, and
  verified on every later contact. Learnt keys never go into the user's file.

Under both, a host whose key differs from the one trusted is stopped with a
message naming the host, both fingerprints and the file to edit, before any
tool logs in: a reinstalled machine and a man in the middle look the same, and
only a person can tell them apart. No tool is ever told to accept a key:
paramiko runs with RejectPolicy and OpenSSH (Ansible, the launchers) with
StrictHostKeyChecking=yes against the file `known_hosts_file` gives.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

from kiln.config import DEFAULT_KNOWN_HOSTS, Cluster, NodePool
from kiln.keyfiles import is_known_hosts_lines, replace_private
from kiln.paths import state_root
from kiln.ssh import SshTarget

Report = Callable[[str], None]
# Hosts probed at once: one TCP connection and key exchange each, no login.
_PROBES = 32


def trust_dir(cluster_name: str) -> Path:
    """Kiln's host-key records for one cluster (learnt keys, and the files tools read)."""
    return state_root() / "trust" / cluster_name


def learnt_file(cluster_name: str, pool_name: str) -> Path:
    """The keys Kiln learnt on first contact with a pool's hosts."""
    return trust_dir(cluster_name) / f"{pool_name}.learnt"


def known_hosts_file(cluster: Cluster, pool: NodePool) -> Path:
    """The file every tool verifies `pool`'s host keys against.

    A strict pool whose `knownHosts` names a file uses that file itself. Otherwise
    (lines in the stack, or trust-on-first-use) Kiln writes the given entries, and
    under trust-on-first-use the learnt ones after them, to its state directory.
    """
    given = pool.ssh.known_hosts or DEFAULT_KNOWN_HOSTS
    lines_given = is_known_hosts_lines(given)
    if pool.ssh.host_key_policy == "strict" and not lines_given:
        return Path(given).expanduser()
    if lines_given:
        text = given
    else:
        path = Path(given).expanduser()
        text = path.read_text() if path.is_file() else ""
    if pool.ssh.host_key_policy == "trust-on-first-use":
        learnt = learnt_file(cluster.name, pool.name)
        if learnt.is_file():
            text = text.rstrip("\n") + "\n" + learnt.read_text()
    target = trust_dir(cluster.name) / f"{pool.name}.known_hosts"
    replace_private(target, text.strip("\n") + "\n" if text.strip() else "")
    return target


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: `SHA256:<base64 without padding>`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class HostKeyCheck:
    """What a host's presented key says against the keys trusted for it."""

    host: str
    status: str
    """known | learnt | unknown | changed | unreachable"""
    message: str = ""


def vet(
    cluster: Cluster, targets: dict[str, SshTarget], report: Report = lambda _: None
) -> dict[str, str]:
    """Check every static host's key before any tool logs in; learn where the policy says.

    Returns the hosts to stop (name -> why): a changed key under either policy, an
    unknown one under `strict`. Lab pools are left out: the lab writes the keys of the
    machines it generated itself.
    """
    static = {
        host.name: pool
        for pool in cluster.node_pools
        if pool.provider == "static"
        for host in pool.hosts
        if host.name in targets
    }
    if not static:
        return {}
    learn = {n for n, p in static.items() if p.ssh.host_key_policy == "trust-on-first-use"}
    checks = check_hosts(
        [targets[n] for n in static],
        learn,
        cluster.name,
        {n: p.name for n, p in static.items()},
        report,
    )
    for name in sorted({static[c.host].name for c in checks.values() if c.status == "learnt"}):
        known_hosts_file(cluster, next(p for p in static.values() if p.name == name))
    return {c.host: c.message for c in checks.values() if c.status in ("changed", "unknown")}


def check_hosts(
    targets: Iterable[SshTarget],
    learn: set[str],
    cluster_name: str,
    pools: dict[str, str],
    report: Report = lambda _: None,
    timeout: float = 10,
) -> dict[str, HostKeyCheck]:
    """Each target's presented key against its known_hosts; learn where `learn` allows.

    `learn`: host names under trust-on-first-use; `pools`: host name -> pool name
    (where a learnt key is recorded). A host that does not answer is `unreachable`
    here and left to the tool that logs in, which reports it by name.
    """
    targets = list(targets)
    with ThreadPoolExecutor(max_workers=min(_PROBES, max(1, len(targets)))) as executor:
        found = list(executor.map(lambda t: _check(t, timeout), targets))
    checks = {check.host: check for check in found}
    for target in targets:
        check = checks[target.name]
        if check.status == "unknown" and target.name in learn:
            key = _presented_key(target, None, timeout)
            if key is None:
                continue
            _record(learnt_file(cluster_name, pools[target.name]), target, key)
            message = (
                f"{target.name} ({target.address}): trusted on first use, "
                f"{key.get_name()} {fingerprint(key)}"
            )
            checks[target.name] = HostKeyCheck(target.name, "learnt", message)
            report(message)
    return checks


def _check(target: SshTarget, timeout: float) -> HostKeyCheck:
    known = paramiko.HostKeys()
    if target.known_hosts.is_file():
        known.load(str(target.known_hosts))
    names = _lookup_names(target)
    trusted = next((known.lookup(n) for n in names if known.lookup(n)), None)
    if not trusted:
        return HostKeyCheck(
            target.name,
            "unknown",
            f"{target.name} ({target.address}): no host key for it in {target.known_hosts}: "
            "add it there (ssh-keyscan, then compare the fingerprint with the host's console), "
            "or set the pool's ssh.hostKeyPolicy: trust-on-first-use",
        )
    key = _presented_key(target, list(trusted.keys()), timeout)
    if key is None:
        return HostKeyCheck(target.name, "unreachable")
    expected = trusted.get(key.get_name())
    if expected is not None and expected.asbytes() == key.asbytes():
        return HostKeyCheck(target.name, "known")
    was = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in trusted.values())
    return HostKeyCheck(
        target.name,
        "changed",
        f"{target.name} ({target.address}): HOST KEY CHANGED: it presents {key.get_name()} "
        f"{fingerprint(key)}, trusted is {was} ({target.known_hosts}). If the host was "
        "reinstalled, remove its old entry from that file (or from Kiln's learnt keys, "
        f"{trust_dir('<cluster>')}/<pool>.learnt) and run again; otherwise do not connect",
    )


def _lookup_names(target: SshTarget) -> list[str]:
    """How known_hosts may name the host: its address (port 22) or `[address]:port`."""
    if target.port == 22:
        return [target.address, target.name]
    return [f"[{target.address}]:{target.port}", f"[{target.name}]:{target.port}"]


def _presented_key(
    target: SshTarget, key_types: list[str] | None, timeout: float
) -> paramiko.PKey | None:
    """The host key the server offers (of `key_types` when given); None if it does not answer.

    Only the key exchange runs: nothing is authenticated, nothing sent to the host.
    """
    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
    except OSError:
        return None
    transport = paramiko.Transport(sock)
    try:
        if key_types:
            options = transport.get_security_options()
            offered = [t for t in options.key_types if t in key_types] or list(key_types)
            options.key_types = offered
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (OSError, paramiko.SSHException):
        return None
    finally:
        transport.close()


def _record(path: Path, target: SshTarget, key: paramiko.PKey) -> None:
    """Append the learnt key in known_hosts form (never replacing an earlier record)."""
    name = _lookup_names(target)[0]
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)
