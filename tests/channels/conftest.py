"""Fixtures for channel tests: the Twilio + SendGrid simulator (tests/provider_sim.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from provider_sim import ProviderSim


@pytest.fixture
def provider_sim() -> Iterator[ProviderSim]:
    """A started simulator without faults; change them with ``provider_sim.set_faults(...)``."""
    with ProviderSim(seed=20261123) as sim:
        yield sim
