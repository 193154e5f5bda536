"""docs/troubleshooting.md quotes only messages the code has.

The page's format: every markdown table with a `message` column quotes, in that
column, messages as code spans (`...`, or ``...`` when the message holds a
backtick), with `<placeholders>` (optionally in quotes, as `{value!r}` prints
them) for the parts that vary; text between the spans ("or", "(+ ...)") is not
a quote. Each run of fixed text of at least 20 characters between placeholders
must occur verbatim in kiln/, components/, validation/, roles/ or __main__.py,
with adjacent Python string literals joined and whitespace runs read as one
space (how Python joins literals and how YAML folds a `>-` message).
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

DOC = REPO / "docs" / "troubleshooting.md"
SOURCE_DIRS = ("kiln", "components", "validation", "roles")
SOURCE_FILES = ("__main__.py",)
SOURCE_SUFFIXES = {".py", ".yml", ".yaml", ".j2"}
MIN_FRAGMENT = 20

# A code span: a run of backticks, the content, the same run again (CommonMark).
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_PLACEHOLDER = re.compile(r"'?<[^<>]+>'?")
_CELL = re.compile(r"(?<!\\)\|")
_SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")
# The end of one string literal and the start of the next on a following line.
_ADJACENT_LITERALS = re.compile(r"""["']\s*\n\s*[rRbBfF]{0,2}["']""")


def _cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip() for cell in _CELL.split(body)]


def quoted_messages() -> list[tuple[int, str]]:
    """(line number, message) for every code span in a `message` column of the page."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    found: list[tuple[int, str]] = []
    column = None
    for number, line in enumerate(lines, 1):
        if not line.startswith("|"):
            column = None
            continue
        if _SEPARATOR.match(line):
            continue
        cells = _cells(line)
        following = lines[number] if number < len(lines) else ""
        if _SEPARATOR.match(following):  # a header row
            names = [cell.lower() for cell in cells]
            column = names.index("message") if "message" in names else None
            continue
        if column is None or column >= len(cells):
            continue
        for _, content in _SPAN.findall(cells[column]):
            found.append((number, content.replace("\\|", "|").strip()))
    return found


def fragments(message: str) -> list[str]:
    """The fixed runs of `message` long enough to check."""
    runs = (" ".join(run.split()) for run in _PLACEHOLDER.split(message))
    return [run for run in runs if len(run) >= MIN_FRAGMENT]


@cache
def corpus() -> str:
    """Every source file's text, normalized as the module docstring says."""
    paths = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*"))]
    paths += [REPO / name for name in SOURCE_FILES]
    texts = []
    for path in paths:
        if not path.is_file() or path.suffix not in SOURCE_SUFFIXES:
            continue
        if "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".py":
            text = _ADJACENT_LITERALS.sub("", text)
        texts.append(" ".join(text.split()))
    return "\n".join(texts)


def test_the_page_quotes_messages_in_its_message_columns() -> None:
    messages = quoted_messages()
    # The page covers a few hundred messages: far fewer means the format changed
    # and this test stopped reading them.
    assert len(messages) >= 200, len(messages)
    assert sum(len(fragments(m)) for _, m in messages) >= 150


def test_every_quoted_message_is_in_the_code() -> None:
    missing = [
        f"docs/troubleshooting.md:{number}: {fragment!r}"
        for number, message in quoted_messages()
        for fragment in fragments(message)
        if fragment not in corpus()
    ]
    assert not missing, "quoted but not in the code:\n" + "\n".join(missing)


def test_placeholders_are_stripped_and_literals_joined() -> None:
    assert fragments("'<value>' is not a version like '550.127.08' or '2.21.5'") == [
        "is not a version like '550.127.08' or '2.21.5'"
    ]
    assert fragments("<host>: no such <thing> here") == []
    assert _ADJACENT_LITERALS.sub("", 'x = (f"{a} b "\n        "c")') == 'x = (f"{a} b c")'
    row = "| `k` | `` needs `id` `` or `a \\| b` | means |"
    assert [span for _, span in _SPAN.findall(_cells(row)[1])] == [" needs `id` ", "a \\| b"]
