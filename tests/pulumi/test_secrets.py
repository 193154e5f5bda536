"""SSH keys, the kubeconfig and the munge key stay Pulumi secrets from config to outputs."""

from __future__ import annotations

import json

import pulumi
import pytest

from components.cluster import stack_outputs
from components.mocks import (
    CERTIFICATION_RUN,
    FAKE_MUNGE_KEY,
    K8S_PROVIDER,
    PLAYBOOK,
    PREFLIGHT,
    RecordingMonitor,
    is_wrapped_secret,
    plaintext_strings,
    settled,
)
from kiln import monitoring_web
from tests.pulumi.harness import FAKE_KUBECONFIG, build, fake_key, stack_cluster, stack_document

pytestmark = pytest.mark.pulumi

KEY_PATHS = {
    "staging": [
        "config.kiln:cluster.nodePools[0].ssh.privateKey",
        "config.kiln:cluster.nodePools[1].ssh.privateKey",
    ],
    "prod": [
        "config.kiln:cluster.nodePools[0].ssh.privateKey",
        "config.kiln:cluster.nodePools[1].ssh.privateKey",
    ],
}


def _is_secret(output: pulumi.Output) -> pulumi.Output[bool]:
    return pulumi.Output.from_input(output.is_secret())


@pytest.mark.parametrize("stack", ["staging", "prod"])
@pulumi.runtime.test
def test_ssh_keys_reach_resources_only_as_secrets(monitor: RecordingMonitor, stack: str):
    component = build(monitor, stack_cluster(stack))
    keys = [fake_key(path) for path in KEY_PATHS[stack]]

    def check(_):
        for r in monitor.registrations:
            leaked = [s for s in plaintext_strings(r.wire) if any(k in s for k in keys)]
            assert not leaked, f"{r.urn} holds an SSH key in plain text"
        for r in monitor.of_type(PREFLIGHT):
            assert is_wrapped_secret(r.wire["privateKey"]), r.urn
            assert r.inputs["privateKey"] in keys, r.urn  # the provider does get the key
        for r in monitor.of_type(PLAYBOOK) + monitor.of_type(CERTIFICATION_RUN):
            assert is_wrapped_secret(r.wire["secrets"]), r.urn
            assert sorted(r.inputs["secrets"]["sshKeys"].values()) == sorted(keys), r.urn

    return settled(component).apply(check)


@pulumi.runtime.test
def test_kubeconfig_is_a_secret_stack_output_and_provider_input(monitor: RecordingMonitor):
    component = build(monitor, stack_cluster("prod"))
    outputs = stack_outputs(component)

    def check(args):
        kubeconfig, kubeconfig_secret = args[0], args[1]
        assert kubeconfig == FAKE_KUBECONFIG
        assert kubeconfig_secret, "stack output kubeconfig must be secret"
        (provider,) = monitor.of_type(K8S_PROVIDER)
        assert is_wrapped_secret(provider.wire["kubeconfig"]), provider.urn
        token = "kiln-test-token-5f1d"
        for r in monitor.registrations:
            assert not [s for s in plaintext_strings(r.wire) if token in s], r.urn

    return pulumi.Output.all(
        outputs["kubeconfig"], _is_secret(outputs["kubeconfig"]), settled(component)
    ).apply(check)


@pulumi.runtime.test
def test_munge_key_is_secret_and_handed_to_the_roles_as_such(monitor: RecordingMonitor):
    component = build(monitor, stack_cluster("staging"))
    munge = component.provisioning.munge_key
    assert munge is not None

    def check(args):
        key, secret = args[0], args[1]
        assert key == FAKE_MUNGE_KEY and secret, "munge key output must be secret"
        for r in monitor.of_type(PLAYBOOK):
            if r.inputs["stage"] == "node":
                assert r.inputs["secrets"]["extraVars"] == {"munge_key_b64": FAKE_MUNGE_KEY}, r.urn
            assert is_wrapped_secret(r.wire["secrets"]), r.urn
            assert FAKE_MUNGE_KEY not in json.dumps(plaintext_strings(r.wire)), r.urn

    return pulumi.Output.all(munge, _is_secret(munge), settled(component)).apply(check)


@pytest.mark.parametrize("stack", ["staging", "prod"])
@pulumi.runtime.test
def test_stack_outputs_are_readable_and_hold_no_key(monitor: RecordingMonitor, stack: str):
    component = build(monitor, stack_cluster(stack))
    outputs = stack_outputs(component)
    public = {k: v for k, v in outputs.items() if k != "kubeconfig"}
    keys = [fake_key(path) for path in KEY_PATHS[stack]]

    def check(args):
        values, secret_flags = args[: len(public)], args[len(public) :]
        for name, flag in zip(public, secret_flags, strict=True):
            # `pulumi stack output nodes` must show facts, not [secret].
            assert not flag, f"stack output {name} is secret"
        text = json.dumps(values, default=str)
        assert not any(k in text for k in keys), "an SSH key reached the stack outputs"
        assert FAKE_MUNGE_KEY not in text

    return pulumi.Output.all(
        *public.values(), *[_is_secret(pulumi.Output.from_input(v)) for v in public.values()]
    ).apply(check)


@pulumi.runtime.test
def test_the_monitoring_password_and_tls_key_reach_every_playbook_only_as_secrets(
    monitor: RecordingMonitor, tmp_path
):
    password = "kiln-test-monitoring-password-9c1e"
    key = "-----BEGIN PRIVATE KEY-----\nkiln-test-tls-key-77ab\n-----END PRIVATE KEY-----\n"
    cert = "-----BEGIN CERTIFICATE-----\nkiln-test-tls-cert\n-----END CERTIFICATE-----\n"
    (tmp_path / "tls.key").write_text(key)
    (tmp_path / "tls.crt").write_text(cert)
    monitoring = {
        **stack_document("staging")["config"]["kiln:cluster"].get("monitoring", {}),
        # What the engine hands the program for a `{secure: ...}` password: the clear text.
        "basicAuth": {"user": "scraper", "password": password},
        "tls": {"certificateFile": str(tmp_path / "tls.crt"), "keyFile": str(tmp_path / "tls.key")},
    }
    cluster = stack_cluster("staging", monitoring=monitoring)
    component = build(monitor, cluster)
    hashed = monitoring_web.password_hash(cluster.name, "scraper", password)

    def check(_):
        playbooks = monitor.of_type(PLAYBOOK)
        assert {r.inputs["stage"] for r in playbooks} >= {"node", "monitoring"}
        for r in playbooks:
            extra = r.inputs["secrets"]["extraVars"]
            # Every stage's run gets them: its provider cannot decrypt the password.
            assert extra["prometheus_scrape_basic_auth_password"] == password, r.urn
            assert extra["node_exporter_web_basic_auth_users"] == {"scraper": hashed}, r.urn
            assert extra["node_exporter_web_tls_key"] == key, r.urn
            assert is_wrapped_secret(r.wire["secrets"]), r.urn
            # The spec every resource carries names the user, never the password.
            assert json.loads(r.inputs["cluster"])["monitoring"]["basicAuth"] == {"user": "scraper"}
        for r in monitor.registrations:
            text = json.dumps(plaintext_strings(r.wire))
            assert password not in text and hashed not in text, r.urn
            assert "kiln-test-tls-key-77ab" not in text, r.urn

    return settled(component).apply(check)
