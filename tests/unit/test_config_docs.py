"""docs/config.md and the config model name the same keys: none missing, none invented."""

from __future__ import annotations

import re
import types
import typing

import pytest
from pydantic import BaseModel

from kiln import stack
from kiln.config import Cluster, PulumiSecret
from tests.conftest import REPO

pytestmark = pytest.mark.unit

DOC = REPO / "docs" / "config.md"
# A table's key column holds paths relative to its section's `(prefix)`;
# `a.b`, `c` is shorthand for a.b and a.c.
_SECTION = re.compile(r"^##+ .*?(?:\(`([^`]+)`\))?\s*$")


def documented_keys() -> tuple[set[str], set[str]]:
    """(`kiln:cluster` key paths, other `kiln:*` keys) as docs/config.md lists them."""
    cluster: set[str] = set()
    others: set[str] = set()
    prefix, target = "", cluster
    for line in DOC.read_text().splitlines():
        if heading := _SECTION.match(line):
            label = heading.group(1) or ""
            target = others if "other `kiln:" in line.lower() else cluster
            prefix = re.sub(r"\[i\]", "[]", label) if label.startswith(("nodePools", "lab")) else ""
            continue
        if not line.startswith("| `"):
            continue
        keys = re.findall(r"`([^`]+)`", line.split("|")[1])
        parent = ""
        for i, key in enumerate(keys):
            path = key if i == 0 else f"{parent}{key}"
            if i == 0:
                parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
            target.add(f"{prefix}.{path}" if prefix else path)
    return cluster, {k.removeprefix("kiln:") for k in others}


def _models(annotation: object) -> list[tuple[type[BaseModel], str]]:
    """The config models inside a field's type, with `[]` for list items."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if origin is list:
        return [(m, f"[]{s}") for m, s in _models(typing.get_args(annotation)[0])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation is PulumiSecret:  # a secret value, documented as one key
            return []
        return [(annotation, "")]
    return []


def model_keys(model: type[BaseModel] = Cluster, prefix: str = "") -> tuple[set[str], set[str]]:
    """(every key path, the leaf paths) of the model, by their camelCase aliases."""
    every: set[str] = set()
    leaves: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        every.add(path)
        nested = _models(info.annotation)
        if not nested:
            leaves.add(path)
        for sub, suffix in nested:
            sub_every, sub_leaves = model_keys(sub, f"{path}{suffix}.")
            every |= sub_every
            leaves |= sub_leaves
    return every, leaves


def test_every_documented_key_exists_in_the_model() -> None:
    documented, _ = documented_keys()
    every, _ = model_keys()
    assert documented - every == set(), "docs/config.md names keys the model does not have"


def test_every_model_key_is_documented() -> None:
    documented, _ = documented_keys()
    _, leaves = model_keys()
    assert leaves - documented == set(), "keys missing from docs/config.md"


def test_the_other_kiln_keys_are_documented() -> None:
    _, others = documented_keys()
    assert others == stack._KILN_KEYS - {"cluster"}
