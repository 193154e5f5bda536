"""Environment variable names shared by launchers and ranks (stdlib only, no torch:
launchers that only render manifests or start processes must not pay for importing it)."""

HOST_NAME_ENV = "KILN_HOST_NAME"
"""The host's inventory name; ranks report it in results and error messages."""
