"""Dynamic providers load in Pulumi's provider host, and building the program touches no host."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import paramiko
import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components import providers
from components.mocks import PREFLIGHT, RecordingMonitor, settled
from kiln.certify import CertifyContext
from kiln.config import Cluster
from tests.conftest import REPO
from tests.pulumi.harness import build, stack_cluster

pytestmark = pytest.mark.pulumi


def site_certifier(cluster: Cluster, context: CertifyContext) -> dict[str, Any]:
    """A certifier from another module, as the validation suite will plug one in."""
    return {"status": "not-run", "message": cluster.name}


@pytest.mark.parametrize(
    "provider",
    [
        providers.PreflightProvider(),
        providers.LabMachinesProvider(),
        providers.PlaybookProvider(),
        providers.CertificationProvider(),
        providers.CertificationProvider(site_certifier),
        providers.MungeKeyProvider(),
    ],
    ids=lambda p: f"{type(p).__name__}-{getattr(getattr(p, 'certifier', None), '__name__', '')}",
)
@pulumi.runtime.test
def test_provider_loads_in_a_fresh_interpreter_by_reference(provider: Any):
    # The engine's dynamic provider host unpickles this in the project directory.
    blob = serialize_provider(provider)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import base64, dill, sys; p = dill.loads(base64.b64decode(sys.stdin.read())); "
            "c = getattr(p, 'certifier', None); "
            "print(type(p).__module__, type(p).__name__, c and c.__module__, c and c.__name__)",
        ],
        input=blob,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )

    def check(size: int) -> None:
        assert loaded.returncode == 0, loaded.stderr
        certifier = getattr(provider, "certifier", None)
        expected = [
            "components.providers",
            type(provider).__name__,
            str(certifier and certifier.__module__),
            str(certifier and certifier.__name__),
        ]
        assert loaded.stdout.split() == expected
        # By reference: a few hundred bytes, not the pickled code of kiln.
        assert size < 2048, f"{type(provider).__name__} pickles to {size} bytes"

    return pulumi.Output.from_input(len(base64.b64decode(blob))).apply(check)


@pytest.mark.parametrize("stack", ["lab", "prod"])
@pulumi.runtime.test
def test_building_the_program_touches_no_host(
    monitor: RecordingMonitor, monkeypatch: pytest.MonkeyPatch, stack: str
):
    touched: list[str] = []

    def record(what: str):
        return lambda *args, **kwargs: touched.append(what)

    import ansible_runner

    from kiln.lab import lifecycle as lab

    monkeypatch.setattr(paramiko.SSHClient, "connect", record("ssh"))
    monkeypatch.setattr(ansible_runner, "run", record("ansible"))
    monkeypatch.setattr(lab.Lab, "up", record("lab up"))
    monkeypatch.setattr(lab.Lab, "status", record("lab status"))
    monkeypatch.setattr(subprocess, "run", record("subprocess"))
    component = build(monitor, stack_cluster(stack))

    def check(_):
        assert touched == [], f"building stack {stack} ran {touched}"

    return settled(component).apply(check)


@pulumi.runtime.test
def test_a_pool_of_many_hosts_builds(monitor: RecordingMonitor):
    # pulumi.dynamic's provider serialization deepens a pickle wrapper per resource;
    # without KilnResource's reset pickling fails once the chain outgrows the recursion limit (~1,000 resources).
    hosts = [
        {"name": f"gpu{i:04d}", "address": f"10.1.{i // 250}.{i % 250 + 1}"} for i in range(1100)
    ]
    cluster = stack_cluster(
        "staging",
        nodePools=[
            {**stack_cluster("staging").model_dump(mode="json", by_alias=True)["nodePools"][0]},
            {
                "name": "big",
                "provider": "static",
                "hosts": hosts,
                "ssh": {"user": "ubuntu", "privateKeyPath": "/dev/null"},
            },
        ],
    )
    component = build(monitor, cluster)

    def check(_):
        assert len(monitor.of_type(PREFLIGHT)) == 1101

    return settled(component).apply(check)


@pulumi.runtime.test
def test_munge_key_is_the_one_kiln_provision_uses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # One key per cluster whichever path provisions it: the stack records the
    # key kiln.secrets keeps on this machine, and creating again reads it back.
    from kiln import secrets

    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path))
    provider = providers.MungeKeyProvider()
    first = provider.create({"cluster": "c1"})
    second = provider.create({"cluster": "c1"})
    other = provider.create({"cluster": "c2"})

    def check(stored: bytes) -> None:
        assert base64.b64decode(first.outs["key"]) == stored
        assert second.outs["key"] == first.outs["key"] != other.outs["key"]
        assert provider.diff(first.id, first.outs, {"cluster": "c1"}).changes is False

    return pulumi.Output.from_input(secrets.read_munge_key("c1")).apply(check)
