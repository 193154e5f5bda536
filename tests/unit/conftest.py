"""Unit tests never reach a network: host-key vetting, which probes each static host's
sshd before Ansible or the launchers log in, is replaced by "every key is known" here.
Its own tests (tests/unit/test_host_trust.py) call the real function against a local
sshd stand-in, and the lab tests run it against real hosts."""

from __future__ import annotations

import pytest

from kiln import host_trust

REAL_VET = host_trust.vet


@pytest.fixture(autouse=True)
def _no_host_key_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_trust, "vet", lambda cluster, targets, report=None: {})
