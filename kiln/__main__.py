"""`python -m kiln` is the `kiln` command."""

from kiln.cli import app

app(prog_name="kiln")
