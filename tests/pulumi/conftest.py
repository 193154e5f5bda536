"""Fixtures for the Pulumi program under mocks."""

from __future__ import annotations

import pytest

from components.mocks import RecordingMonitor, new_monitor


@pytest.fixture
def monitor() -> RecordingMonitor:
    """Fresh mocks for this test's program; records every resource registration."""
    return new_monitor()
