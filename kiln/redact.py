"""Secret values this process knows, and text with every one of them taken out.

Secrets are kept out of output by design (no_log in the roles, no values in
config errors, the runner's environment scrubbed); this is the net under that
design. Whatever Kiln prints (`kiln.cli` wraps stdout and stderr) or writes as
a report passes through `redact`, which replaces each registered value, in
clear, base64 and hex, with `[redacted]`. Values are registered where Kiln
reads them: the stack's secret fields, the munge key, key and password files.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable, Iterable
from typing import TextIO

from pydantic import SecretStr

MASK = "[redacted]"
# Shorter values are not registered: masking "root" or "22" would garble output
# and protect nothing (a secret that short is no secret).
_MIN_LENGTH = 8

_lock = threading.Lock()
_forms: set[str] = set()


def register(value: str | bytes | SecretStr | None) -> None:
    """Remember a secret: its text, each long line of it, and their base64 and hex forms."""
    if value is None:
        return
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    raw = value if isinstance(value, bytes) else value.encode()
    pieces = {raw.strip()}
    # A key file's error may quote one line of it: each line is a secret too,
    # except the armour lines every key shares.
    pieces |= {
        line.strip()
        for line in raw.splitlines()
        if len(line.strip()) >= _MIN_LENGTH and not line.startswith(b"-----")
    }
    forms = set()
    for piece in pieces:
        if len(piece) < _MIN_LENGTH:
            continue
        forms.add(piece.decode(errors="replace"))
        forms.add(base64.b64encode(piece).decode())
        forms.add(piece.hex())
    with _lock:
        _forms.update(f for f in forms if len(f) >= _MIN_LENGTH)


def register_all(values: Iterable[str | bytes | SecretStr | None]) -> None:
    for value in values:
        register(value)


def redact(text: str) -> str:
    """`text` with every registered secret form replaced by `[redacted]` (longest first)."""
    with _lock:
        forms = sorted(_forms, key=len, reverse=True)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def forget_all() -> None:
    """Drop every registered value (tests)."""
    with _lock:
        _forms.clear()


def secret_fields(model: object) -> list[SecretStr]:
    """Every clear secret value inside a config model (SSH keys, passwords), found by type:
    a secret field added to the model later is covered without a change here."""
    from pydantic import BaseModel

    found: list[SecretStr] = []
    if isinstance(model, SecretStr):
        found.append(model)
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += secret_fields(getattr(model, name))
    elif isinstance(model, list | tuple):
        for item in model:
            found += secret_fields(item)
    return found


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what it is given before passing it on.

    `inner` is looked up at each write (`lambda: sys.stdout`), so a stream swapped
    in later (a test runner capturing output) is still the one written to.
    """

    def __init__(self, inner: Callable[[], TextIO]) -> None:
        self._inner = inner

    @property
    def inner(self) -> TextIO:
        return self._inner()

    def write(self, text: str) -> int:
        self.inner.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")
