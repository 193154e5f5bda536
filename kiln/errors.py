"""Errors the CLI turns into a clear message and an exit code, never a traceback."""


class KilnError(Exception):
    """Something failed while doing the work (exit code 1)."""


class UsageError(KilnError):
    """Bad input or an unusable environment, found before anything changed (exit code 2)."""
