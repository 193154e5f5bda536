"""`__main__.py` itself: Pulumi config in, one Cluster, the documented stack outputs."""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator

import pulumi
import pytest
from pulumi.runtime import settings
from pulumi.runtime.config import set_all_config

from components.mocks import RecordingMonitor, settled
from tests.conftest import REPO
from tests.pulumi.harness import FAKE_KUBECONFIG, stack_cluster, stack_document

pytestmark = pytest.mark.pulumi

PROGRAM = str(REPO / "__main__.py")


@pytest.fixture
def config() -> Iterator[dict[str, str]]:
    """Pulumi config for the program; cleared afterwards so other tests see none."""
    values: dict[str, str] = {}
    yield values
    set_all_config({})


def _configure(values: dict[str, str], secret_keys: list[str]) -> None:
    set_all_config(values, secret_keys)


def _cluster_config(stack: str) -> str:
    return json.dumps(stack_document(stack)["config"]["kiln:cluster"])


@pulumi.runtime.test
def test_program_builds_the_prod_stack_and_exports_its_outputs(
    monitor: RecordingMonitor, config: dict[str, str]
):
    config.update({"kiln:cluster": _cluster_config("prod"), "kiln:kubeconfig": FAKE_KUBECONFIG})
    _configure(config, ["kiln:cluster", "kiln:kubeconfig"])
    monitor.mocks.cluster = stack_cluster("prod")
    program = runpy.run_path(PROGRAM, run_name="__main__")
    outputs = settings.get_root_resource().outputs
    assert set(outputs) == {
        "nodes",
        "provisioning",
        "provisioningHash",
        "allreduceBusbwGbps",
        "certification",
        "kubeconfig",
    }

    def check(args):
        nodes, busbw, kubeconfig_secret = args[0], args[1], args[2]
        (cluster,) = monitor.of_type("kiln:cluster:Cluster")
        assert cluster.name == "prod-h100", cluster.urn
        assert len(nodes) == 9, sorted(nodes)
        assert busbw == pytest.approx(362.4)
        assert kubeconfig_secret, "kubeconfig output must be secret"

    return pulumi.Output.all(
        outputs["nodes"],
        outputs["allreduceBusbwGbps"],
        pulumi.Output.from_input(outputs["kubeconfig"].is_secret()),
        settled(program["cluster"]),
    ).apply(check)


@pulumi.runtime.test
def test_a_bad_config_stops_the_program_with_the_key_path(
    monitor: RecordingMonitor, config: dict[str, str]
):
    document = stack_document("staging")["config"]["kiln:cluster"]
    document["nodePools"][1]["gpu"]["perNode"] = 0
    config["kiln:cluster"] = json.dumps(document)
    _configure(config, ["kiln:cluster"])
    with pytest.raises(pulumi.RunError) as failure:
        runpy.run_path(PROGRAM, run_name="__main__")
    registered = [r.urn for r in monitor.registrations]

    def check(message: str) -> None:
        assert "kiln:cluster.nodePools[1].gpu.perNode" in message, message
        assert registered == [], f"nothing may be created from a bad config: {registered}"

    return pulumi.Output.from_input(str(failure.value)).apply(check)


@pulumi.runtime.test
def test_a_kubernetes_stack_without_kubeconfig_says_which_key_to_set(
    monitor: RecordingMonitor, config: dict[str, str]
):
    config["kiln:cluster"] = _cluster_config("prod")
    _configure(config, ["kiln:cluster"])
    with pytest.raises(pulumi.RunError) as failure:
        runpy.run_path(PROGRAM, run_name="__main__")

    def check(message: str) -> None:
        assert "pulumi config set --secret kiln:kubeconfig" in message, message

    return pulumi.Output.from_input(str(failure.value)).apply(check)
