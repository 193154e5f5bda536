"""Host keys: strict refuses the unknown, trust-on-first-use learns once and says so, and a
changed key stops that host under either policy, before anything logs in.

The hosts are a local SSH server (paramiko in server mode on 127.0.0.1) that does
the key exchange with its own host key, the part of SSH host trust is about; the lab
tests run the same code against real sshd.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from kiln import host_trust
from kiln.inventory import access_for
from kiln.stack import cluster_from_document
from tests.unit.conftest import REAL_VET

pytestmark = pytest.mark.unit


class KeyServer:
    """Answers SSH key exchanges on 127.0.0.1 with `key`; nobody can log in."""

    def __init__(self, key: paramiko.PKey, port: int = 0) -> None:
        self.key = key
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.key)
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept(); close alone would not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def server() -> Iterator[KeyServer]:
    running = KeyServer(paramiko.ECDSAKey.generate())
    yield running
    running.close()


def _cluster(tmp_path: Path, port: int, policy: str, known: str | None = None):
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    known_file = tmp_path / "known_hosts"
    known_file.write_text(known or "")
    pool = {
        "name": "p1",
        "provider": "static",
        "hosts": [{"name": "n1", "address": "127.0.0.1"}],
        "ssh": {
            "privateKeyPath": str(key),
            "port": port,
            "knownHosts": str(known_file),
            "hostKeyPolicy": policy,
        },
    }
    document = {"config": {"kiln:cluster": {"name": "trust", "nodePools": [pool]}}}
    return cluster_from_document(document, "test")


def _vet(cluster) -> tuple[dict[str, str], list[str]]:
    said: list[str] = []
    stopped = REAL_VET(cluster, access_for(cluster).targets, said.append)
    return stopped, said


def test_strict_refuses_a_host_it_has_no_key_for_naming_it_and_learns_nothing(
    tmp_path, state, server
):
    stopped, said = _vet(_cluster(tmp_path, server.port, "strict"))
    assert list(stopped) == ["n1"]
    assert "no host key for it in" in stopped["n1"] and "trust-on-first-use" in stopped["n1"]
    assert said == []
    assert not host_trust.learnt_file("trust", "p1").exists()


def test_strict_lets_a_known_key_through(tmp_path, state, server):
    line = f"[127.0.0.1]:{server.port} {server.key.get_name()} {server.key.get_base64()}\n"
    assert _vet(_cluster(tmp_path, server.port, "strict", known=line)) == ({}, [])


def test_first_use_learns_once_says_the_fingerprint_and_then_verifies(tmp_path, state, server):
    cluster = _cluster(tmp_path, server.port, "trust-on-first-use")
    stopped, said = _vet(cluster)
    assert stopped == {}
    assert said == [
        f"n1 (127.0.0.1): trusted on first use, {server.key.get_name()} "
        f"{host_trust.fingerprint(server.key)}"
    ]
    learnt = host_trust.learnt_file("trust", "p1")
    assert learnt.read_text() == (
        f"[127.0.0.1]:{server.port} {server.key.get_name()} {server.key.get_base64()}\n"
    )
    assert learnt.stat().st_mode & 0o077 == 0
    assert (tmp_path / "known_hosts").read_text() == "", "the user's file is never written"
    # Every tool reads the combined file, which now holds the learnt key.
    target = access_for(cluster).targets["n1"]
    assert server.key.get_base64() in target.known_hosts.read_text()
    assert _vet(cluster) == ({}, []), "a second contact learns nothing and says nothing"


def test_a_changed_key_stops_the_host_under_either_policy_and_keeps_the_old_record(
    tmp_path, state, server
):
    cluster = _cluster(tmp_path, server.port, "trust-on-first-use")
    _vet(cluster)
    learnt = host_trust.learnt_file("trust", "p1").read_text()
    trusted = server.key
    server.key = paramiko.ECDSAKey.generate()  # same address, another key: reinstalled, or not
    stopped, said = _vet(cluster)
    assert list(stopped) == ["n1"] and said == []
    message = stopped["n1"]
    assert "HOST KEY CHANGED" in message
    assert host_trust.fingerprint(server.key) in message
    assert host_trust.fingerprint(trusted) in message
    assert host_trust.learnt_file("trust", "p1").read_text() == learnt, "never re-learnt"
    line = f"[127.0.0.1]:{server.port} {trusted.get_name()} {trusted.get_base64()}\n"
    strict = _cluster(tmp_path, server.port, "strict", known=line)
    assert "HOST KEY CHANGED" in _vet(strict)[0]["n1"]


def test_a_host_that_does_not_answer_is_left_to_the_login_that_names_it(tmp_path, state):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = f"[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1VtQkYd2xH0PzTNwS5wzDgV1Wb7zU6k9oC+8wHk2b7\n"
    assert _vet(_cluster(tmp_path, port, "strict", known=line)) == ({}, [])
