"""Bad input is refused before any host is touched: unreadable key files, a lab subnet the
host already uses; errors are one line per problem, exit 2, no traceback unless --debug,
and a secret the run read is masked in whatever is printed or written."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from kiln import redact
from kiln.cli import app
from kiln.lab import network
from kiln.lab.layout import LabLayout
from kiln.provision import _scrub_environment
from kiln.stack import check_key_files, cluster_from_document
from tests.conftest import REPO, write_stack

pytestmark = pytest.mark.unit

KEY_TEXT = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    yield
    redact.forget_all()


def _static(tmp_path: Path, **ssh) -> dict:
    return {
        "name": "c1",
        "scheduler": "slurm",
        "nodePools": [
            {
                "name": "p1",
                "provider": "static",
                "hosts": [
                    {"name": "n1", "address": "10.1.0.1", "roles": ["controller", "compute"]}
                ],
                "ssh": ssh,
            }
        ],
    }


def _paths(problems) -> dict[str, str]:
    return {p.path: p.message for p in problems}


def test_a_key_file_that_cannot_serve_is_named_before_any_host(tmp_path: Path):
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello")
    for given, says in [
        (tmp_path / "missing", "no such file"),
        (tmp_path, "is a directory, not a private key"),
        (not_a_key, "is not a private key"),
    ]:
        cluster = cluster_from_document(
            {"config": {"kiln:cluster": _static(tmp_path, privateKeyPath=str(given))}}, "t"
        )
        problems = _paths(check_key_files(cluster))
        assert says in problems["kiln:cluster.nodePools[0].ssh.privateKeyPath"], problems
        assert "hello" not in str(problems), "file contents are never echoed"


def test_commands_that_log_in_need_a_usable_key_and_known_hosts_config_check_does_not(
    tmp_path: Path,
):
    secret_only = {"privateKey": {"secure": "v1:abc"}, "knownHosts": str(tmp_path / "nope")}
    cluster = cluster_from_document(
        {"config": {"kiln:cluster": _static(tmp_path, **secret_only)}}, "t"
    )
    assert check_key_files(cluster) == [], "config check of a Pulumi-secret stack passes"
    problems = _paths(check_key_files(cluster, reach=True))
    assert (
        "cannot decrypt the Pulumi secret"
        in problems["kiln:cluster.nodePools[0].ssh.privateKeyPath"]
    )
    assert "hostKeyPolicy strict" in problems["kiln:cluster.nodePools[0].ssh.knownHosts"]
    first_use = {**secret_only, "hostKeyPolicy": "trust-on-first-use"}
    cluster = cluster_from_document(
        {"config": {"kiln:cluster": _static(tmp_path, **first_use)}}, "t"
    )
    assert "kiln:cluster.nodePools[0].ssh.knownHosts" not in _paths(
        check_key_files(cluster, reach=True)
    )


def test_kiln_provision_with_an_unreadable_key_is_exit_2_and_touches_nothing(tmp_path: Path):
    stacks = tmp_path / "stacks"
    write_stack(stacks, "bad", _static(tmp_path, privateKeyPath=str(tmp_path)))
    result = CliRunner().invoke(app, ["provision", "--stack", "bad", "--stacks-dir", str(stacks)])
    assert result.exit_code == 2, result.output
    assert "ssh.privateKeyPath" in result.output and "is a directory" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "state" / "provision").exists(), "no run was started"


def test_a_clear_private_key_is_used_from_the_secret_store_and_masked_in_output(tmp_path: Path):
    from kiln.inventory import access_for

    cluster = cluster_from_document(
        {"config": {"kiln:cluster": _static(tmp_path, privateKey=KEY_TEXT, knownHosts="x")}}, "t"
    )
    target = access_for(cluster).targets["n1"]
    assert target.key_file.read_text() == KEY_TEXT
    assert target.key_file.stat().st_mode & 0o077 == 0
    assert target.key_file.parent.stat().st_mode & 0o077 == 0
    body = KEY_TEXT.splitlines()[1]
    quoted = (
        f"ssh said: {body} / {base64.b64encode(body.encode()).decode()} / {body.encode().hex()}"
    )
    assert body not in redact.redact(quoted)
    assert redact.redact(quoted).count(redact.MASK) == 3


def test_the_lab_subnet_may_not_overlap_the_hosts_addresses_or_routes(monkeypatch):
    import ipaddress

    addrs = [
        {"ifname": "eth0", "addr_info": [{"local": "10.77.5.2", "prefixlen": 24}]},
        {"ifname": "kl-x-br", "addr_info": [{"local": "10.77.6.1", "prefixlen": 24}]},
    ]
    routes = [{"dst": "default", "dev": "eth0"}, {"dst": "10.77.7.0/24", "dev": "wg0"}]

    def fake_run(cmd):
        return SimpleNamespace(stdout=json.dumps(addrs if "addr" in cmd else routes))

    monkeypatch.setattr(network, "run", fake_run)
    layout = LabLayout("x")
    conflicts = network.subnet_conflicts(layout, ipaddress.IPv4Network("10.77.5.0/24"))
    assert conflicts == ["10.77.5.0/24 overlaps 10.77.5.2/24 on eth0: choose another private /24"]
    assert "wg0" in network.subnet_conflicts(layout, ipaddress.IPv4Network("10.77.7.0/24"))[0]
    assert network.subnet_conflicts(layout, ipaddress.IPv4Network("10.77.6.0/24")) == [], (
        "the lab's own bridge is not a conflict"
    )
    with pytest.raises(Exception, match="kiln:cluster.lab.subnet: 10.77.5.0/24 overlaps"):
        network.check_subnet_free(layout, ipaddress.IPv4Network("10.77.5.0/24"))


def test_an_unexpected_error_is_one_line_without_traceback_unless_debug(monkeypatch):
    import kiln.cli

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"boom {KEY_TEXT.splitlines()[1]}")

    redact.register(KEY_TEXT)
    monkeypatch.setattr(kiln.cli, "load_stack", broken)
    plain = CliRunner().invoke(app, ["config", "check", "--stack", "lab"])
    assert plain.exit_code == 1
    assert "internal error: RuntimeError: boom [redacted]" in plain.output
    assert "Traceback" not in plain.output
    debug = CliRunner().invoke(app, ["--debug", "config", "check", "--stack", "lab"])
    assert debug.exit_code == 1 and "Traceback" in debug.output
    assert KEY_TEXT.splitlines()[1] not in debug.output, "the traceback is masked too"


def test_an_artifact_that_cannot_be_scrubbed_is_deleted_and_said(tmp_path: Path):
    command = tmp_path / "command"
    command.write_text('{"env": {"AWS_SECRET_ACCESS_KEY": "x"')  # cut short: not JSON
    said = _scrub_environment(tmp_path)
    assert said is not None and "deleted" in said
    assert not command.exists()
    command.write_text(json.dumps({"command": ["ansible-playbook"], "env": {"TOKEN": "t0ken"}}))
    assert _scrub_environment(tmp_path) is None
    assert "t0ken" not in command.read_text()
    assert json.loads(command.read_text())["command"] == ["ansible-playbook"]


def test_the_example_stacks_pass_config_check():
    for stack in ("lab", "staging", "prod"):
        result = CliRunner().invoke(
            app, ["config", "check", "--stack", stack, "--stacks-dir", str(REPO / "stacks")]
        )
        assert result.exit_code == 0, (stack, result.output)
