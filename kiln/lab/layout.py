"""Names and paths of everything one lab creates.

Every kernel object carries the lab's id so that `kiln lab down` (and the
leftover sweep before `kiln lab up`) can find exactly what this lab made, even
after a crash lost the processes, and never touches anything else:

- network namespaces  `kiln-<id>-<node>`
- links               `kl-<id>-br` (bridge), `kl-<id>-<hash5>` (host end of a node's veth)
- iptables rules      comment `kiln-lab:<id>`
- files and mounts    under `<state root>/labs/<id>/`
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from kiln.paths import state_root


@dataclass(frozen=True)
class LabLayout:
    """Names and paths for the lab with a given id."""

    lab_id: str

    @property
    def directory(self) -> Path:
        return state_root() / "labs" / self.lab_id

    @property
    def nodes_dir(self) -> Path:
        return self.directory / "nodes"

    @property
    def ssh_dir(self) -> Path:
        return self.directory / "ssh"

    @property
    def private_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """An OpenSSH client config naming every node: `ssh -F <this> node1`."""
        return self.ssh_dir / "config"

    @property
    def bridge(self) -> str:
        return f"kl-{self.lab_id}-br"

    @property
    def rule_tag(self) -> str:
        return f"kiln-lab:{self.lab_id}"

    @property
    def netns_prefix(self) -> str:
        return f"kiln-{self.lab_id}-"

    @property
    def link_pattern(self) -> re.Pattern[str]:
        """Matches this lab's links and nothing else."""
        return re.compile(rf"^kl-{re.escape(self.lab_id)}-(br|[0-9a-f]{{5}})$")

    def netns(self, node: str) -> str:
        return f"{self.netns_prefix}{node}"

    def veth(self, node: str) -> str:
        # Interface names are capped at 15 characters; a hash of the node name
        # keeps them unique and stable whatever order the hosts are listed in.
        return f"kl-{self.lab_id}-{hashlib.sha256(node.encode()).hexdigest()[:5]}"

    def node_dir(self, node: str) -> Path:
        return self.nodes_dir / node


@dataclass(frozen=True)
class NodePaths:
    """Files of one lab node."""

    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def root(self) -> Path:
        """The node's root filesystem (an overlay of the cached rootfs)."""
        return self.base / "root"

    @property
    def pid_file(self) -> Path:
        return self.base / "nspawn.pid"

    @property
    def console_log(self) -> Path:
        return self.base / "console.log"
