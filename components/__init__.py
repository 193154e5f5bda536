"""Pulumi ComponentResources: thin wrappers that turn the config model into resources.

They call into `kiln` for all logic; nothing in `kiln` or `validation` imports them.
"""
