"""Fixtures for the Pulumi program under mocks."""

from __future__ import annotations

import pytest

from tests.pulumi.harness import new_monitor
from tests.pulumi.mocks import RecordingMonitor


@pytest.fixture
def monitor() -> RecordingMonitor:
    """Fresh mocks for this test's program; records every resource registration."""
    return new_monitor()
