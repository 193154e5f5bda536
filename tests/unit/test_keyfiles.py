"""Secrets written to private files only for as long as a call needs them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kiln.cluster_spec import cluster_from_spec, cluster_spec
from kiln.errors import UsageError
from kiln.keyfiles import (
    cluster_with_key_files,
    is_known_hosts_lines,
    private_keys,
)
from kiln.stack import cluster_from_keys

pytestmark = pytest.mark.unit

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----"
KNOWN = "10.0.0.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5V"


def _cluster(private_key: object = KEY, known_hosts: str | None = KNOWN):
    ssh = {"user": "ubuntu", "privateKey": private_key}
    if known_hosts:
        ssh["knownHosts"] = known_hosts
    return cluster_from_keys(
        {
            "cluster": {
                "name": "c1",
                "nodePools": [
                    {
                        "name": "gpu",
                        "provider": "static",
                        "hosts": [{"name": "gpu001", "address": "10.0.0.11"}],
                        "ssh": ssh,
                    }
                ],
            }
        },
        "test",
    )


def test_spec_carries_no_key_and_round_trips():
    cluster = _cluster()
    spec = cluster_spec(cluster)
    assert "c2VjcmV0" not in spec
    assert "privateKey" not in json.loads(spec)["nodePools"][0]["ssh"]
    assert private_keys(cluster) == {"gpu": KEY}
    assert cluster_from_spec(spec).node_pools[0].hosts == cluster.node_pools[0].hosts


def test_key_and_known_hosts_lines_live_in_private_files_only_during_the_call():
    spec = cluster_spec(_cluster())
    with cluster_with_key_files(spec, {"gpu": KEY}) as cluster:
        ssh = cluster.node_pools[0].ssh
        key_file, known_file = Path(ssh.private_key_path), Path(ssh.known_hosts)
        assert key_file.read_text() == KEY + "\n"  # OpenSSH needs the final newline
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        assert known_file.read_text().strip() == KNOWN
    assert not key_file.exists() and not key_file.parent.exists()


def test_known_hosts_file_path_is_used_as_given():
    spec = cluster_spec(_cluster(known_hosts="~/.ssh/kiln-prod.known_hosts"))
    with cluster_with_key_files(spec, {"gpu": KEY}) as cluster:
        assert cluster.node_pools[0].ssh.known_hosts == str(
            Path("~/.ssh/kiln-prod.known_hosts").expanduser()
        )
    assert is_known_hosts_lines(KNOWN) and not is_known_hosts_lines("/etc/ssh/known_hosts")


def test_an_undecrypted_key_is_refused_with_a_reason():
    with pytest.raises(UsageError, match="still encrypted"):
        private_keys(_cluster(private_key={"secure": "v1:abc"}))
