"""Kiln control plane: config model, lab machines, SSH, provisioning, CLI.

Nothing here imports Pulumi; `components/` wraps this library for the engine.
"""

__version__ = "0.1.0"
