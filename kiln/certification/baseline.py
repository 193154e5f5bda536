"""Baseline files: what a hardware class is expected to measure, as data.

A baseline (`stacks/baselines/<class>.yaml`) is a list of rules. Each rule
reads one measurement and judges it against bounds, each with a warn band
before the fail bound:

- `floor` / `ceiling`: absolute bounds (`{fail: 0.3, warn: 0.4}`);
- `baseline`: the expected value and how far below it (fractions) warns/fails;
- `median`: how far below the median of the subject's pool warns/fails
  (catches the one slow node of a fleet that is otherwise within spec);
- `equals`: an exact value (a check that must hold, e.g. a mount is present);
- `kind: homogeneity`: the named preflight facts must agree across each pool.

A baseline may `extends:` another file of the same directory; rules with the
same id are replaced. Bad files fail before any host is touched, naming the
key. Nothing here evaluates text (no `eval`): bounds are numbers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from kiln.errors import UsageError
from kiln.stack import find_project_root

BASELINE_SCHEMA_VERSION = 1

#: Stack features a rule can require; a rule whose feature the stack lacks does
#: not apply (a CPU lab has no GPU count to check), and is listed as such.
Feature = Literal["slurm", "storage", "prometheus", "gpu", "multi-gpu", "rdma", "dcgm"]
#: Who a rule judges: the cluster as a whole, every host, every compute host, the
#: compute hosts of GPU pools, or the hosts of pools with an RDMA fabric.
Scope = Literal["cluster", "hosts", "computes", "gpu-computes", "rdma-hosts"]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Band(_Model):
    """A fail bound and an optional warn bound (same units as the rule's bounds)."""

    fail: float
    warn: float | None = None


class Relative(_Model):
    """Fractions below (higher-is-better) an expected value that warn and fail."""

    fail: float = Field(gt=0, lt=1)
    warn: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> Relative:
        if self.warn is not None and self.warn >= self.fail:
            raise ValueError(f"warn ({self.warn}) must be a smaller fraction than fail")
        return self


class Expected(Relative):
    """`baseline:` the expected value, and the fractions below it that warn and fail."""

    value: float = Field(gt=0)


class Rule(_Model):
    """One rule of a baseline."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    kind: Literal["threshold", "equals", "homogeneity"] = "threshold"
    measurement: str | None = None
    scope: Scope = "cluster"
    unit: str = ""
    higher_is_better: bool = True
    floor: Band | None = None
    ceiling: Band | None = None
    baseline: Expected | None = None
    median: Relative | None = None
    equals: bool | int | str | None = None
    facts: list[str] = Field(default_factory=list)
    requires: list[Feature] = Field(default_factory=list)
    fault: str = Field(pattern=r"^KILN-[A-Z]+-\d{3}$")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.kind == "homogeneity":
            if not self.facts:
                raise ValueError("a homogeneity rule needs `facts`")
            if self.scope == "cluster":
                raise ValueError("a homogeneity rule judges hosts: scope hosts or computes")
            return self
        if not self.measurement:
            raise ValueError("needs `measurement`")
        if self.kind == "equals":
            if self.equals is None:
                raise ValueError("an equals rule needs `equals`")
            return self
        if not (self.floor or self.ceiling or self.baseline or self.median):
            raise ValueError("a threshold rule needs floor, ceiling, baseline or median")
        if self.median and self.scope == "cluster":
            raise ValueError("`median` compares hosts of a pool: scope hosts or computes")
        for name, band in (("floor", self.floor), ("ceiling", self.ceiling)):
            if band and band.warn is not None:
                worse = band.warn < band.fail if name == "floor" else band.warn > band.fail
                if worse:
                    raise ValueError(f"{name}.warn must lie on the good side of {name}.fail")
        return self


class IsolationSettings(_Model):
    """Which rule's failure starts isolation, and so what a slow group run is."""

    rule: str = "allreduce.busbw"


class Baseline(_Model):
    """A whole baseline file."""

    schema_version: int = Field(BASELINE_SCHEMA_VERSION, ge=1, le=BASELINE_SCHEMA_VERSION)
    hardware_class: str = Field(alias="class", pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    extends: str | None = None
    isolation: IsolationSettings = Field(default_factory=IsolationSettings)
    rules: list[Rule] = Field(default_factory=list)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def baselines_dir() -> Path:
    return find_project_root() / "stacks" / "baselines"


def resolve(name: str, base: Path | None = None) -> Path:
    """A class name (`lab-cpu`) is `stacks/baselines/<name>.yaml`; anything with a `/` or
    ending in .yaml is a path (relative to the project root)."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        return path if path.is_absolute() else find_project_root() / path
    return (base or baselines_dir()) / f"{name}.yaml"


def load(name: str) -> tuple[Baseline, dict[str, Any]]:
    """The baseline `name` with its `extends` chain merged, and `{class, path, digest}`.

    UsageError naming the file and key for anything wrong."""
    path = resolve(name)
    documents: list[tuple[Path, dict[str, Any]]] = []
    seen: set[Path] = set()
    while True:
        if path in seen:
            raise UsageError(f"baseline {path}: `extends` loops back to itself")
        seen.add(path)
        document = _read(path)
        documents.append((path, document))
        parent = document.get("extends")
        if not parent:
            break
        # A class name is looked up beside the file first, then among the shipped ones,
        # so a generated site baseline can live anywhere and still extend `lab-cpu`.
        beside = resolve(str(parent), path.parent)
        path = beside if beside.exists() else resolve(str(parent))
    merged: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    for _, document in reversed(documents):  # the root of the chain first
        merged.update({k: v for k, v in document.items() if k != "rules"})
        for i, rule in enumerate(document.get("rules") or []):
            if not isinstance(rule, dict) or "id" not in rule:
                raise UsageError(f"baseline {documents[0][0]}: rules[{i}] needs an `id`")
            rules[rule["id"]] = rule
    merged["rules"] = list(rules.values())
    merged.pop("extends", None)
    top = documents[0][0]
    try:
        baseline = Baseline.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors(include_url=False)
        )
        raise UsageError(f"baseline {top}: {problems}") from None
    digest = hashlib.sha256()
    for path, _ in documents:
        digest.update(path.read_bytes())
    info = {"class": baseline.hardware_class, "path": str(top), "digest": digest.hexdigest()[:16]}
    return baseline, info


def _read(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in baselines_dir().glob("*.yaml"))
        raise UsageError(
            f"baseline {path} does not exist; set kiln:cluster.certification.baseline to one of "
            f"{', '.join(known)} or a file path"
        ) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"baseline {path}: not YAML ({exc})") from None
    if not isinstance(document, dict):
        raise UsageError(f"baseline {path}: expected a mapping at the top")
    return document
