"""Dynamic resources: Pulumi's handle on work only Kiln can do (SSH, lab machines, Ansible).

Each provider method is a few lines around a plain function in `kiln`
(`preflight`, `lab_machines`, `playbook_resource`, `certify`), where the logic is tested
without the engine. Recorded state never holds a secret: inputs such as SSH
keys are stripped from what create/update return.

Providers hold no state but an optional certifier function, so they pickle
by reference (the dynamic provider process imports `components` and `kiln`
from the project, see docs/pulumi.md).
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from kiln import certify, lab_machines, playbook_resource, preflight

_PROVIDER_KEY = "__provider"
_STOCK_BATCH_SETITEMS = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]


def _state(props: Mapping[str, Any], *drop: str) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k != _PROVIDER_KEY and k not in drop}


class KilnResource(Resource):
    """Base of Kiln's dynamic resources: `props` plus declared outputs, and one SDK workaround.

    `pulumi.dynamic.serialize_provider` wraps `pickle._Pickler._batch_setitems`
    in a sorting wrapper on every call and never restores it, so each dynamic
    resource deepens the chain; a few hundred resources in, pickling raises
    RecursionError ("maximum recursion depth exceeded", the symptom of
    pulumi/pulumi#17803). Restoring the stock method after each resource keeps
    the chain one deep; a 1,024-node pool needs 1,024 Preflight resources.
    """

    def __init__(
        self,
        provider: ResourceProvider,
        name: str,
        props: Mapping[str, Any],
        outputs: tuple[str, ...],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        try:
            super().__init__(provider, name, {**props, **dict.fromkeys(outputs)}, opts)
        finally:
            pickle._Pickler._batch_setitems = _STOCK_BATCH_SETITEMS  # type: ignore[attr-defined]


# -- preflight -------------------------------------------------------------------


class PreflightProvider(ResourceProvider):
    """One static host: its facts; diff logs in again and reports a changed or moved host."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        facts = preflight.gather(preflight.HostAccess.from_props(props))
        return CreateResult(f"{props['host']}@{props['address']}", self._state(props, facts))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        change = preflight.diff_host(olds, news)
        return DiffResult(changes=change.changed, replaces=change.replaces)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        facts = preflight.gather(preflight.HostAccess.from_props(news))
        return UpdateResult(self._state(news, facts))

    # delete: nothing to undo; the host is not the stack's to remove.

    @staticmethod
    def _state(props: Mapping[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
        return {**_state(props, "privateKey"), "facts": facts}


class Preflight(KilnResource, module="kiln", name="Preflight"):
    """Preflight facts of one static host (see `kiln.preflight`)."""

    facts: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(PreflightProvider(), name, props, ("facts",), opts)


# -- lab machines ----------------------------------------------------------------


class LabMachinesProvider(ResourceProvider):
    """A stack's lab: `Lab.up()` to create or repair, `teardown` to delete."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(props["lab"]["id"], lab_machines.up(_state(props)))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        reasons, replaces = lab_machines.diff(olds, news)
        # Same subnet, new id: the old bridge must go before the new one comes up.
        return DiffResult(changes=bool(reasons), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(lab_machines.up(_state(news)))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        lab_machines.down(props)


class LabMachines(KilnResource, module="kiln", name="LabMachines"):
    """The lab machines of a stack (see `kiln.lab_machines`)."""

    nodes: pulumi.Output[dict[str, Any]]
    ssh_config: pulumi.Output[str]

    def __init__(
        self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        outputs = ("nodes", "changes", "sshConfig", "privateKeyPath", "knownHostsPath")
        super().__init__(LabMachinesProvider(), name, props, outputs, opts)


# -- playbooks -------------------------------------------------------------------


class PlaybookProvider(ResourceProvider):
    """A stage of roles on some hosts, re-run only when `kiln.playbook_resource` finds drift."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(
            f"{props['stage']}:{props.get('pool') or 'all'}",
            playbook_resource.run_playbook(_state(props)),
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=bool(playbook_resource.playbook_rerun_reasons(olds, news)))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(playbook_resource.run_playbook(_state(news)))

    # delete: roles have no undo; hosts keep their configuration (docs/pulumi.md).


class Playbook(KilnResource, module="kiln", name="Playbook"):
    """One run of a stage's roles (see `kiln.drift.playbook_inputs`)."""

    hash: pulumi.Output[str]
    summary: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(PlaybookProvider(), name, props, ("summary", "secretsDigest"), opts)


# -- certification ---------------------------------------------------------------


class CertificationProvider(ResourceProvider):
    """Runs a certifier after provisioning and records its result."""

    def __init__(self, certifier: certify.Certifier = certify.certify) -> None:
        super().__init__()
        self.certifier = certifier

    def create(self, props: dict[str, Any]) -> CreateResult:
        state = certify.run_from_props(_state(props), self.certifier)
        return CreateResult(f"certification:{props['provisioningHash'][:12]}", state)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=bool(certify.recertify_reasons(olds, news)))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(certify.run_from_props(_state(news), self.certifier))

    # delete: a record only; nothing on the hosts to undo.


class CertificationRun(KilnResource, module="kiln", name="CertificationRun"):
    """One certification of the cluster as provisioned (see `kiln.certify`)."""

    record: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        props: Mapping[str, Any],
        certifier: certify.Certifier = certify.certify,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(CertificationProvider(certifier), name, props, ("record",), opts)


# -- munge key -------------------------------------------------------------------


class MungeKeyProvider(ResourceProvider):
    """The cluster's munge key from `kiln.secrets` (made once, shared with `kiln provision`)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from kiln.secrets import ensure_munge_key

        key = base64.b64encode(ensure_munge_key(props["cluster"])).decode()
        return CreateResult(
            f"munge-key:{props['cluster']}", {"cluster": props["cluster"], "key": key}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Rotation is deliberate (kiln.secrets.rotate_munge_key), never a diff; a
        # renamed cluster is another cluster, with its own key.
        renamed = olds.get("cluster") != news.get("cluster")
        return DiffResult(changes=renamed, replaces=["cluster"] if renamed else [])


class MungeKey(KilnResource, module="kiln", name="MungeKey"):
    """The cluster's munge key (base64), a Pulumi secret in state and every output.

    Kept in the stack as well as on the machine that made it, so whoever runs
    `pulumi up` next provisions the same key.
    """

    key: pulumi.Output[str]

    def __init__(self, name: str, cluster: str, opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["key"])
        )
        super().__init__(MungeKeyProvider(), name, {"cluster": cluster}, ("key",), opts)
