"""Benchmarks, launchers and certification checks that run on cluster nodes.

This package is copied to nodes that have only Python and torch installed, so
it imports nothing but the standard library and torch.
"""
