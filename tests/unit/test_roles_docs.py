"""docs/roles.md and the roles name the same variables: none missing, none invented.

Every role directory with `defaults/main.yml` has a `## <role>` section whose
variable table (first column) lists every default; a variable the table names
must be a default or an argument_specs option of that role; every `## ` section
named like a role variable section names a role directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.unit

DOC = REPO / "docs" / "roles.md"
ROLES = REPO / "roles"
TABLE_HEADER = "| Variable | Default | Set from the stack | Meaning |"
# Cells are split on pipes that are not escaped (`\|` inside a code span).
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def role_dirs() -> list[str]:
    """Every role under roles/ that has defaults."""
    return sorted(p.parent.parent.name for p in ROLES.glob("*/defaults/main.yml"))


def role_defaults(role: str) -> set[str]:
    return set(yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {})


def role_options(role: str) -> set[str]:
    """Options of every entry point in the role's meta/argument_specs.yml."""
    path = ROLES / role / "meta" / "argument_specs.yml"
    if not path.is_file():
        return set()
    specs = (yaml.safe_load(path.read_text()) or {}).get("argument_specs") or {}
    return {name for entry in specs.values() for name in (entry or {}).get("options") or {}}


def doc_sections(doc: Path = DOC) -> dict[str, list[str]]:
    """`## ` heading text -> the lines of its section (up to the next `## ` heading)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return sections


def table_variables(lines: list[str]) -> list[str]:
    """The names in the first column of the section's variable table(s)."""
    names: list[str] = []
    in_table = False
    for line in lines:
        if line.strip() == TABLE_HEADER:
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table or set(line) <= set("|- "):
            continue
        first = _CELL_SPLIT.split(line)[1]
        names.extend(re.findall(r"`([^`]+)`", first))
    return names


def role_sections() -> dict[str, list[str]]:
    """The sections that document a role: those holding a variable table."""
    return {
        title: lines
        for title, lines in doc_sections().items()
        if any(line.strip() == TABLE_HEADER for line in lines)
    }


@pytest.mark.parametrize("role", role_dirs())
def test_the_role_is_documented(role: str) -> None:
    """One failure per role, naming every problem of its section."""
    section = doc_sections().get(role)
    assert section is not None, f"docs/roles.md has no `## {role}` section for roles/{role}"
    assert any(line.strip() == TABLE_HEADER for line in section), (
        f"docs/roles.md `## {role}` has no `{TABLE_HEADER}` table"
    )
    documented = set(table_variables(section))
    problems = []
    if missing := sorted(role_defaults(role) - documented):
        problems.append(
            f"missing variables of roles/{role}/defaults/main.yml: {', '.join(missing)}"
        )
    if unknown := sorted(documented - role_defaults(role) - role_options(role)):
        problems.append(
            f"variables roles/{role} neither defaults nor declares in meta/argument_specs.yml: "
            + ", ".join(unknown)
        )
    assert not problems, f"docs/roles.md `## {role}`: " + "; ".join(problems)


def test_no_variable_is_listed_twice() -> None:
    repeated = {
        title: sorted({n for n in names if names.count(n) > 1})
        for title, lines in role_sections().items()
        if len(names := table_variables(lines)) != len(set(names))
    }
    assert not repeated, f"docs/roles.md lists variables more than once: {repeated}"


def test_every_documented_role_exists() -> None:
    existing = set(role_dirs())
    unknown = sorted(set(role_sections()) - existing)
    assert not unknown, (
        "docs/roles.md documents roles with no roles/<role>/defaults/main.yml: "
        + ", ".join(unknown)
    )


def test_the_parser_reads_a_table(tmp_path: Path) -> None:
    """Escaped pipes stay in their cell; other sections and tables are not read."""
    doc = tmp_path / "roles.md"
    doc.write_text(
        "# Roles\n\n## How roles are applied\n\n| Play | Hosts |\n| --- | --- |\n"
        "| `x` | `all` |\n\n## demo\n\nText naming `not_a_row`.\n\n"
        f"{TABLE_HEADER}\n| --- | --- | --- | --- |\n"
        '| `demo_a` | `"{{ x \\| default(1) }}"` | — | a |\n'
        "| `demo_b` | `[]` | `storage.kind` | b `demo_c` |\n\nAfter.\n"
    )
    sections = doc_sections(doc)
    assert list(sections) == ["How roles are applied", "demo"]
    assert table_variables(sections["How roles are applied"]) == []
    assert table_variables(sections["demo"]) == ["demo_a", "demo_b"]
